package mail

import (
	"bytes"
	"mime"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"time"
)

// envelope holds the bare addresses SMTP needs for MAIL FROM and RCPT TO.
type envelope struct {
	from, to string
}

// compose validates m and renders it as an RFC 5322 message with CRLF line
// endings. date is a parameter so that tests can assert exact bytes.
func compose(m Message, date time.Time) (envelope, []byte, error) {
	// A line break in a header value would let the value start new headers
	// (or the body), so it is refused outright rather than escaped.
	for _, h := range []struct{ name, value string }{
		{"To", m.To}, {"From", m.From}, {"Subject", m.Subject}, {"MessageID", m.MessageID},
	} {
		if strings.ContainsAny(h.value, "\r\n") {
			return envelope{}, nil, invalid("%s contains a line break", h.name)
		}
	}
	from, err := parseAddress("From", m.From)
	if err != nil {
		return envelope{}, nil, err
	}
	to, err := parseAddress("To", m.To)
	if err != nil {
		return envelope{}, nil, err
	}
	id, err := messageID(m.MessageID)
	if err != nil {
		return envelope{}, nil, err
	}

	var b bytes.Buffer
	header := func(name, value string) {
		b.WriteString(name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	header("Date", date.Format(time.RFC1123Z))
	header("From", from.String())
	header("To", to.String())
	header("Subject", encodeSubject(m.Subject))
	header("Message-ID", id)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=UTF-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")

	// The quoted-printable writer turns each "\n" into CRLF and encodes a
	// bare "\r", so normalise first: every line break the caller meant,
	// whatever its style, becomes one CRLF.
	body := strings.ReplaceAll(m.Body, "\r\n", "\n")
	body = strings.ReplaceAll(body, "\r", "\n")
	qp := quotedprintable.NewWriter(&b)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = qp.Write([]byte(body))
	_ = qp.Close()

	return envelope{from: from.Address, to: to.Address}, b.Bytes(), nil
}

// parseAddress parses one address. The address itself must be ASCII: a UTF-8
// local part needs SMTPUTF8 end to end, which nothing here negotiates. A
// non-ASCII display name is fine; Address.String encodes it.
func parseAddress(field, s string) (*netmail.Address, error) {
	if s == "" {
		return nil, invalid("%s is empty", field)
	}
	a, err := netmail.ParseAddress(s)
	if err != nil {
		return nil, invalid("%s %q: %v", field, s, err)
	}
	for i := 0; i < len(a.Address); i++ {
		if a.Address[i] > '~' {
			return nil, invalid("%s %q: non-ASCII address", field, s)
		}
	}
	return a, nil
}

// messageID checks that s is a msg-id of the form <left@right>, both sides
// dot-atom text, and returns it with angle brackets.
func messageID(s string) (string, error) {
	if s == "" {
		return "", invalid("MessageID is empty")
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	left, right, ok := strings.Cut(inner, "@")
	if !ok || !isDotAtom(left) || !isDotAtom(right) {
		return "", invalid("MessageID %q: want <left@right>", s)
	}
	return "<" + inner + ">", nil
}

// isDotAtom reports whether s is RFC 5322 dot-atom-text: atext runs joined by
// single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// encodeSubject returns s as RFC 2047 encoded-words when it is not plain
// ASCII. mime.QEncoding splits long text into several encoded-words on one
// line; folding between them keeps lines short, and the whitespace between
// adjacent encoded-words is dropped when decoding, so the text is unchanged.
func encodeSubject(s string) string {
	enc := mime.QEncoding.Encode("utf-8", s)
	if enc == s {
		return s
	}
	return strings.ReplaceAll(enc, "?= =?", "?=\r\n =?")
}
