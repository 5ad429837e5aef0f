package outbox_test

import (
	"strings"
	"testing"

	"orderd/outbox"
)

func TestSignature(t *testing.T) {
	key := []byte(strings.Repeat("k", 32))
	sig := outbox.Signature(key, "7-1", "OrderPlaced", []byte(`{"a":1}`))
	if !outbox.VerifySignature(key, sig, "7-1", "OrderPlaced", []byte(`{"a":1}`)) {
		t.Fatal("a message's own signature does not check")
	}
	for name, check := range map[string]func() bool{
		"another body": func() bool { return outbox.VerifySignature(key, sig, "7-1", "OrderPlaced", []byte(`{"a":2}`)) },
		"another id":   func() bool { return outbox.VerifySignature(key, sig, "7-2", "OrderPlaced", []byte(`{"a":1}`)) },
		"another type": func() bool { return outbox.VerifySignature(key, sig, "7-1", "PaymentCompleted", []byte(`{"a":1}`)) },
		"another key": func() bool {
			return outbox.VerifySignature([]byte(strings.Repeat("j", 32)), sig, "7-1", "OrderPlaced", []byte(`{"a":1}`))
		},
		"no signature": func() bool { return outbox.VerifySignature(key, "", "7-1", "OrderPlaced", []byte(`{"a":1}`)) },
		"fields moved": func() bool {
			return outbox.VerifySignature(key, outbox.Signature(key, "7-", "1OrderPlaced", []byte(`{"a":1}`)), "7-1", "OrderPlaced", []byte(`{"a":1}`))
		},
		"bare hash": func() bool {
			return outbox.VerifySignature(key, strings.TrimPrefix(sig, "v1."), "7-1", "OrderPlaced", []byte(`{"a":1}`))
		},
	} {
		if check() {
			t.Errorf("%s: the signature checks", name)
		}
	}
	if k, err := outbox.SigningKey(""); k != nil || err != nil {
		t.Errorf(`SigningKey("") = %v, %v; want off`, k, err)
	}
	if _, err := outbox.SigningKey("too-short"); err == nil || strings.Contains(err.Error(), "too-short") {
		t.Errorf("SigningKey of 9 bytes: %v; want an error that does not repeat the key", err)
	}
}
