package queues

import (
	"strings"
	"unicode/utf8"
)

// MaxAttributes is SQS's limit of message attributes per message. Watermill's publishers
// send each metadata entry as one, plus one for the message's uuid.
const MaxAttributes = 10

// AllowedRune reports whether SQS accepts r in a message body or a String attribute value:
// #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF.
func AllowedRune(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// Sanitize returns s as SQS accepts it: invalid UTF-8 and every character SQS refuses become
// U+FFFD. For text about a message (a dead letter's reason), never for a message's body.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !AllowedRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if AllowedRune(r) {
			return r
		}
		return utf8.RuneError
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}
