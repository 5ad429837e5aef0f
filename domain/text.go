package domain

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What the strings of an order may hold. Each one travels further than the request that
// brought it: into SQS message bodies, whose characters must be #x9 | #xA | #xD |
// #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF (anything else and SQS refuses the whole
// message, and with it the relay's batch); into utf8mb4 columns whose VARCHAR(n) counts
// characters; and into an email a person reads. A value that cannot make the whole journey is
// refused here, where the customer can still be told which field is wrong.

// MaxLocalPartLen is RFC 5321's limit on the part of an address before the @.
const MaxLocalPartLen = 64

// QueueSafe reports whether SQS accepts r in a message body or a String attribute value:
// #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF. It is the one statement of
// that rule in the service: the boundary refuses orders by it, and queues cleans text about a
// message by it.
func QueueSafe(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0xD7FF) ||
		(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= unicode.MaxRune)
}

// checkLabel checks text that names something (a customer, a SKU): valid UTF-8, at most max
// characters, and nothing a reader cannot see or that changes how the rest is shown. It
// returns nil or the problem, as a message for field.
//
// Refused, beyond what SQS refuses: control characters (Cc: C0, DEL, C1, so no line breaks
// for a header to be injected through), format characters (Cf: the bidi embeddings,
// overrides, isolates and marks U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C; the
// zero-width U+200B–U+200D, U+2060, U+FEFF; soft hyphen, tags), the line and paragraph
// separators U+2028 and U+2029, and noncharacters. Refusing the zero-width joiners also
// refuses emoji sequences and some Persian and Indic spellings that use them: a name that
// looks like another, or renders the text after it backwards, is the greater harm in an
// order a person reviews.
func checkLabel(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return Invalid(field, "is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return Invalid(field, "is longer than %d characters", max)
	}
	for _, r := range s {
		switch {
		case !QueueSafe(r):
			return Invalid(field, "contains %U, which a queue message cannot carry", r)
		case unicode.Is(unicode.Cc, r):
			return Invalid(field, "contains the control character %U", r)
		case unicode.Is(unicode.Cf, r):
			return Invalid(field, "contains the invisible formatting character %U (bidi control or zero-width)", r)
		case r == '\u2028' || r == '\u2029':
			return Invalid(field, "contains the line break %U", r)
		case noncharacter(r):
			return Invalid(field, "contains the noncharacter %U", r)
		}
	}
	return nil
}

// noncharacter reports whether r is one of Unicode's 66 noncharacters, reserved for a
// program's internal use and never meant to be interchanged.
func noncharacter(r rune) bool {
	return (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE
}

// checkEmail checks an address the shop will send the order's email to. It must be one bare
// addr-spec (no display name, angle brackets or comment; net/mail parses what RFC 5322
// allows), at most 254 bytes with a local part of at most 64, and its domain must be a
// host name a mail server on the internet delivers to: at least two labels of letters,
// digits and hyphens, not all-numeric at the top (a dotted IP address), no IP literal
// ([127.0.0.1]), and none of the special-use names that never resolve there (localhost,
// *.localhost, *.local, *.invalid).
//
// Addresses are ASCII only: an internationalised address needs SMTPUTF8, which not every
// mail server offers, so an order accepted with one could fail at its last step.
func checkEmail(field, s string) error {
	if len(s) > MaxEmailLen {
		return Invalid(field, "is longer than %d characters", MaxEmailLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return Invalid(field, "must be an ASCII address: addresses with other characters need SMTPUTF8, which not every mail server offers")
		}
	}
	if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
		return Invalid(field, "is not a valid email address (one bare address, like ann@example.com)")
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], strings.ToLower(s[at+1:])
	if len(local) > MaxLocalPartLen {
		return Invalid(field, "has more than %d characters before the @", MaxLocalPartLen)
	}
	if strings.HasPrefix(domain, "[") {
		return Invalid(field, "names an IP address, not a mail domain")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return Invalid(field, "needs a domain with a dot in it (like example.com)")
	}
	for _, l := range labels {
		if !hostLabel(l) {
			return Invalid(field, "has a domain that is not a valid host name")
		}
	}
	switch top := labels[len(labels)-1]; {
	case strings.Trim(top, "0123456789") == "":
		return Invalid(field, "has a numeric top-level domain: an IP address is not a mail domain")
	case domain == "localhost" || top == "localhost" || top == "local" || top == "invalid":
		return Invalid(field, "has a domain (%s) that mail on the internet is never delivered to", domain)
	}
	return nil
}

// hostLabel reports whether l is a DNS host name label: 1–63 letters, digits and hyphens,
// not starting or ending with a hyphen.
func hostLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
