package queues

import (
	"strings"
	"unicode/utf8"

	"orderd/domain"
)

// MaxAttributes is SQS's limit of message attributes per message. Watermill's publishers
// send each metadata entry as one, plus one for the message's uuid.
const MaxAttributes = 10

// Sanitize returns s as SQS accepts it: invalid UTF-8 and every character SQS refuses become
// U+FFFD. For text about a message (a dead letter's reason), never for a message's body.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !domain.QueueSafe(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if domain.QueueSafe(r) {
			return r
		}
		return utf8.RuneError
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}
