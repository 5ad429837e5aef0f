package eventstore

import "testing"

type lateEvent struct{}

func (lateEvent) EventType() string { return "LateEvent" }

// TestRegisterRefusedOnceInUse: once the event types are in use (here, listed), Register
// panics instead of changing a table that decodes read without a lock.
func TestRegisterRefusedOnceInUse(t *testing.T) {
	SchemaVersions()
	defer func() {
		if recover() == nil {
			t.Error("Register after the types were in use did not panic")
		}
		if _, ok := SchemaVersions()["LateEvent"]; ok {
			t.Error("LateEvent was registered after the types were in use")
		}
	}()
	Register[lateEvent](1)
}
