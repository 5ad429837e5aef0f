package strictsqs

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
)

// DefaultMaxMessageSize is the message size limit the front enforces unless told otherwise:
// 256 KiB, the limit orderd's boundary promises and that a queue keeps when its
// MaximumMessageSize says so (queues created since August 2025 default to 1 MiB).
const DefaultMaxMessageSize = 256 << 10

// maxAttributes is SQS's limit of message attributes per message.
const maxAttributes = 10

// maxBatchEntries is SQS's limit of entries per SendMessageBatch.
const maxBatchEntries = 10

// Error is one refusal as SQS words it: Code is the code a client reads (the query
// protocol's code, sent in X-Amzn-Query-Error and as a batch entry's Code), Type the
// JSON protocol's __type, Message the text.
type Error struct {
	Code    string
	Type    string
	Message string
}

// Error implements error: the code and the message, as SDKs print them.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// The refusals, with the codes and types real SQS answers with (the JSON protocol with its
// query-compatible error header, as aws-sdk-go-v2 reads it).
func invalidContents(format string, args ...any) *Error {
	return &Error{Code: "InvalidMessageContents", Type: "com.amazonaws.sqs#InvalidMessageContents", Message: fmt.Sprintf(format, args...)}
}

func invalidParameter(format string, args ...any) *Error {
	return &Error{Code: "InvalidParameterValue", Type: "com.amazon.coral.service#InvalidParameterValueException", Message: fmt.Sprintf(format, args...)}
}

func missingParameter(name string) *Error {
	return &Error{Code: "MissingParameter", Type: "com.amazon.coral.service#MissingRequiredParameterException",
		Message: "The request must contain the parameter " + name + "."}
}

func batchError(name, format string, args ...any) *Error {
	return &Error{Code: "AWS.SimpleQueueService." + name, Type: "com.amazonaws.sqs#" + name, Message: fmt.Sprintf(format, args...)}
}

// allowedRune reports whether SQS accepts r in a message body or a String attribute value:
// #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF (XML 1.0's characters).
// Written here again on purpose, not taken from domain.QueueSafe: the front plays SQS for the
// tests, and a mistake in the service's rule must not be repeated by the judge of it.
func allowedRune(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// badRune returns the first rune of s that SQS refuses.
func badRune(s string) (rune, bool) {
	for _, r := range s {
		if !allowedRune(r) {
			return r, true
		}
	}
	return 0, false
}

const allowedSet = "#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]"

// attribute is a message attribute as the JSON protocol carries it.
type attribute struct {
	DataType    string `json:"DataType"`
	StringValue string `json:"StringValue"`
	BinaryValue string `json:"BinaryValue"` // base64
}

// message is what SendMessage and each SendMessageBatch entry carry that the rules look at.
type message struct {
	Body       *string              `json:"MessageBody"`
	Attributes map[string]attribute `json:"MessageAttributes"`
}

// attributeName is what SQS accepts as an attribute name: letters, digits, '_', '-' and
// '.', at most 256, not starting with "AWS." or "Amazon.", not starting or ending with '.',
// no two '.' in a row.
var attributeName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)

// size is what SQS counts against the size limit: the body and each attribute's name, type
// and value, in bytes.
func (m message) size() int {
	n := 0
	if m.Body != nil {
		n = len(*m.Body)
	}
	for name, a := range m.Attributes {
		n += len(name) + len(a.DataType) + len(a.StringValue)
		if a.BinaryValue != "" {
			n += base64.StdEncoding.DecodedLen(len(a.BinaryValue))
		}
	}
	return n
}

// check applies SQS's rules to one message sent alone; it returns the first rule broken,
// nil if none.
func (m message) check(maxSize int) *Error {
	if err := m.checkBody(maxSize, false); err != nil {
		return err
	}
	return m.checkAttributes()
}

// checkBody applies the rules about the body and the size; inBatch words the size refusal as
// SQS does for a batch entry. In a batch SQS fails only the entry that breaks them.
func (m message) checkBody(maxSize int, inBatch bool) *Error {
	if m.Body == nil || *m.Body == "" {
		return missingParameter("MessageBody")
	}
	if size := m.size(); size > maxSize {
		if inBatch {
			return invalidParameter("One or more parameters cannot be validated. Reason: Message must be shorter than %d bytes.", maxSize)
		}
		return invalidParameter("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", maxSize)
	}
	if r, bad := badRune(*m.Body); bad {
		return invalidContents("Invalid binary character '#x%X' was found in the message body, the set of allowed characters is %s.", r, allowedSet)
	}
	return nil
}

// checkAttributes applies the rules about attributes. In a batch SQS refuses the whole
// request for an entry that breaks them.
func (m message) checkAttributes() *Error {
	if len(m.Attributes) > maxAttributes {
		return invalidParameter("Number of message attributes [%d] exceeds the allowed maximum [%d].", len(m.Attributes), maxAttributes)
	}
	for name, a := range m.Attributes {
		if err := checkAttribute(name, a); err != nil {
			return err
		}
	}
	return nil
}

func checkAttribute(name string, a attribute) *Error {
	lower := strings.ToLower(name)
	switch {
	case !attributeName.MatchString(name):
		return invalidParameter("Message (user) attribute name '%s' is invalid: names may hold only letters, digits, '_', '-' and '.', up to 256.", name)
	case strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon."):
		return invalidParameter("You can't use message attribute names beginning with 'AWS.' or 'Amazon.'. These strings are reserved for internal use.")
	case strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, ".."):
		return invalidParameter("Message (user) attribute name '%s' must not start or end with '.', nor hold two in a row.", name)
	}
	base, _, _ := strings.Cut(a.DataType, ".")
	switch base {
	case "String", "Number":
		if a.StringValue == "" {
			return invalidParameter("Message (user) attribute '%s' must contain a non-empty value of type '%s'.", name, base)
		}
		if r, bad := badRune(a.StringValue); bad {
			return invalidParameter("Invalid binary character '#x%X' was found in the message attribute '%s', the set of allowed characters is %s.", r, name, allowedSet)
		}
	case "Binary":
		if a.BinaryValue == "" {
			return invalidParameter("Message (user) attribute '%s' must contain a non-empty value of type 'Binary'.", name)
		}
	default:
		return invalidParameter("The type of message (user) attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", name)
	}
	return nil
}

// entryID is what SQS accepts as a batch entry's Id.
var entryID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

// batchEntry is one SendMessageBatch entry.
type batchEntry struct {
	ID string `json:"Id"`
	message
}

// checkBatch applies the rules that refuse a whole SendMessageBatch request: the entries'
// count and ids, the batch's total size, and every entry's attributes.
func checkBatch(entries []batchEntry, maxSize int) *Error {
	switch {
	case len(entries) == 0:
		return batchError("EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the request.")
	case len(entries) > maxBatchEntries:
		return batchError("TooManyEntriesInBatchRequest", "Maximum number of entries per request are %d. You have sent %d.", maxBatchEntries, len(entries))
	}
	seen := map[string]bool{}
	total := 0
	for _, e := range entries {
		if !entryID.MatchString(e.ID) {
			return batchError("InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.")
		}
		if seen[e.ID] {
			return batchError("BatchEntryIdsNotDistinct", "Id %s repeated.", e.ID)
		}
		seen[e.ID] = true
		total += e.size()
	}
	if total > maxSize {
		return batchError("BatchRequestTooLong", "Batch requests cannot be longer than %d bytes. You have sent %d bytes.", maxSize, total)
	}
	for _, e := range entries {
		if err := e.checkAttributes(); err != nil {
			return err
		}
	}
	return nil
}
