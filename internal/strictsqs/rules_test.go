package strictsqs

import (
	"fmt"
	"strings"
	"testing"
)

func str(s string) *string { return &s }

func attrs(n int) map[string]attribute {
	m := map[string]attribute{}
	for i := range n {
		m[fmt.Sprintf("a%d", i)] = attribute{DataType: "String", StringValue: "v"}
	}
	return m
}

func TestMessageRules(t *testing.T) {
	const max = 1000
	for _, tc := range []struct {
		name    string
		m       message
		inBatch bool
		code    string // "" = accepted
		text    string
	}{
		{name: "plain", m: message{Body: str(`{"a":"Ada"}`)}},
		{name: "allowed edges", m: message{Body: str("\t\n\r \uD7FF\uE000\uFFFD\U00010000\U0010FFFF")}},
		{name: "U+FFFF", m: message{Body: str("Ada\uFFFF")}, code: "InvalidMessageContents", text: "Invalid binary character '#xFFFF' was found in the message body"},
		{name: "U+FFFE", m: message{Body: str("\uFFFE")}, code: "InvalidMessageContents", text: "'#xFFFE'"},
		{name: "control", m: message{Body: str("a\x07b")}, code: "InvalidMessageContents", text: "'#x7'"},
		{name: "NUL", m: message{Body: str("\x00")}, code: "InvalidMessageContents", text: "'#x0'"},
		{name: "empty body", m: message{Body: str("")}, code: "MissingParameter", text: "MessageBody"},
		{name: "no body", m: message{}, code: "MissingParameter"},
		{name: "size at limit", m: message{Body: str(strings.Repeat("x", max-8)), Attributes: map[string]attribute{"k": {DataType: "String", StringValue: "v"}}}},
		{name: "size over limit", m: message{Body: str(strings.Repeat("x", max-7)), Attributes: map[string]attribute{"k": {DataType: "String", StringValue: "v"}}},
			code: "InvalidParameterValue", text: "One or more parameters are invalid. Reason: Message must be shorter than 1000 bytes."},
		{name: "size over limit in a batch", m: message{Body: str(strings.Repeat("x", max+1))}, inBatch: true,
			code: "InvalidParameterValue", text: "One or more parameters cannot be validated. Reason: Message must be shorter than 1000 bytes."},
		{name: "multi-byte size", m: message{Body: str(strings.Repeat("é", max/2+1))}, code: "InvalidParameterValue"},
		{name: "10 attributes", m: message{Body: str("b"), Attributes: attrs(10)}},
		{name: "11 attributes", m: message{Body: str("b"), Attributes: attrs(11)}, code: "InvalidParameterValue",
			text: "Number of message attributes [11] exceeds the allowed maximum [10]."},
		{name: "empty attribute", m: message{Body: str("b"), Attributes: map[string]attribute{"correlation_id": {DataType: "String"}}},
			code: "InvalidParameterValue", text: "Message (user) attribute 'correlation_id' must contain a non-empty value of type 'String'."},
		{name: "attribute character", m: message{Body: str("b"), Attributes: map[string]attribute{"k": {DataType: "String", StringValue: "x\uFFFF"}}},
			code: "InvalidParameterValue", text: "'#xFFFF' was found in the message attribute 'k'"},
		{name: "attribute name", m: message{Body: str("b"), Attributes: map[string]attribute{"a b": {DataType: "String", StringValue: "v"}}}, code: "InvalidParameterValue"},
		{name: "reserved name", m: message{Body: str("b"), Attributes: map[string]attribute{"AWS.x": {DataType: "String", StringValue: "v"}}}, code: "InvalidParameterValue"},
		{name: "dotted name", m: message{Body: str("b"), Attributes: map[string]attribute{"a..b": {DataType: "String", StringValue: "v"}}}, code: "InvalidParameterValue"},
		{name: "custom type", m: message{Body: str("b"), Attributes: map[string]attribute{"n": {DataType: "Number.int", StringValue: "1"}}}},
		{name: "unknown type", m: message{Body: str("b"), Attributes: map[string]attribute{"n": {DataType: "Text", StringValue: "1"}}}, code: "InvalidParameterValue"},
		{name: "binary", m: message{Body: str("b"), Attributes: map[string]attribute{"n": {DataType: "Binary", BinaryValue: "AAEC"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.check(max)
			if tc.inBatch {
				err = tc.m.checkBody(max, true)
			}
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code == "":
				return
			case err == nil:
				t.Fatalf("accepted, want %s", tc.code)
			case err.Code != tc.code || !strings.Contains(err.Message, tc.text):
				t.Fatalf("refused with %v, want %s containing %q", err, tc.code, tc.text)
			}
		})
	}
}

func TestBatchRules(t *testing.T) {
	entry := func(id string, size int) batchEntry {
		return batchEntry{ID: id, message: message{Body: str(strings.Repeat("x", size))}}
	}
	ten := func(size int) []batchEntry {
		var out []batchEntry
		for i := range 10 {
			out = append(out, entry(fmt.Sprint(i), size))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		entries []batchEntry
		code    string
	}{
		{name: "ten that fit", entries: ten(100)},
		{name: "none", code: "AWS.SimpleQueueService.EmptyBatchRequest"},
		{name: "eleven", entries: append(ten(1), entry("10", 1)), code: "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"},
		{name: "same id", entries: []batchEntry{entry("a", 1), entry("a", 1)}, code: "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"},
		{name: "bad id", entries: []batchEntry{entry("a:b", 1)}, code: "AWS.SimpleQueueService.InvalidBatchEntryId"},
		{name: "total over the limit", entries: ten(101), code: "AWS.SimpleQueueService.BatchRequestTooLong"},
		// An entry whose body breaks a rule does not refuse the batch: it is failed alone.
		{name: "one bad body", entries: append(ten(1)[:9], batchEntry{ID: "9", message: message{Body: str("\uFFFF")}})},
		// An entry whose attributes break a rule refuses the whole batch.
		{name: "one entry with 11 attributes", entries: append(ten(1)[:9], batchEntry{ID: "9", message: message{Body: str("b"), Attributes: attrs(11)}}),
			code: "InvalidParameterValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkBatch(tc.entries, 1000)
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != "" && (err == nil || err.Code != tc.code):
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}
