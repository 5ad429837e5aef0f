package mail

import (
	"errors"
	"mime"
	"net/mail"
	"strings"
	"testing"
	"time"
)

// testDate is fixed so that composed messages can be compared byte for byte.
var testDate = time.Date(2026, 3, 14, 15, 9, 26, 0, time.FixedZone("CET", 3600))

func validMessage() Message {
	return Message{
		To:        "buyer@example.com",
		From:      "orders@orderd.test",
		Subject:   "Order 42 completed",
		Body:      "Your order 42 has shipped.\n",
		MessageID: "<order-42-v4@orderd>",
	}
}

func TestComposeASCII(t *testing.T) {
	env, raw, err := compose(validMessage(), testDate)
	if err != nil {
		t.Fatalf("compose: %v", err)
	}
	want := "Date: Sat, 14 Mar 2026 15:09:26 +0100\r\n" +
		"From: <orders@orderd.test>\r\n" +
		"To: <buyer@example.com>\r\n" +
		"Subject: Order 42 completed\r\n" +
		"Message-ID: <order-42-v4@orderd>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=UTF-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n" +
		"\r\n" +
		"Your order 42 has shipped.\r\n"
	if string(raw) != want {
		t.Errorf("message:\n got %q\nwant %q", raw, want)
	}
	if env != (envelope{from: "orders@orderd.test", to: "buyer@example.com"}) {
		t.Errorf("envelope = %+v", env)
	}
}

func TestComposeNonASCII(t *testing.T) {
	m := Message{
		To:        "Zoë Müller <zoe@example.com>",
		From:      "Orderd <orders@orderd.test>",
		Subject:   "Bestellung 42 – versandt",
		Body:      "Hallo Zoë,\r\nPreis=10 €\rEnde",
		MessageID: "order-42-v4@orderd", // brackets are added
	}
	env, raw, err := compose(m, testDate)
	if err != nil {
		t.Fatalf("compose: %v", err)
	}
	want := "Date: Sat, 14 Mar 2026 15:09:26 +0100\r\n" +
		"From: \"Orderd\" <orders@orderd.test>\r\n" +
		"To: =?utf-8?q?Zo=C3=AB_M=C3=BCller?= <zoe@example.com>\r\n" +
		"Subject: =?utf-8?q?Bestellung_42_=E2=80=93_versandt?=\r\n" +
		"Message-ID: <order-42-v4@orderd>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=UTF-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n" +
		"\r\n" +
		// Every line-break style became CRLF; "=" and non-ASCII are escaped.
		"Hallo Zo=C3=AB,\r\nPreis=3D10 =E2=82=AC\r\nEnde"
	if string(raw) != want {
		t.Errorf("message:\n got %q\nwant %q", raw, want)
	}
	if env != (envelope{from: "orders@orderd.test", to: "zoe@example.com"}) {
		t.Errorf("envelope = %+v", env)
	}
}

// A long non-ASCII subject is split into several encoded-words, folded onto
// continuation lines, and still decodes to the original text.
func TestComposeLongSubjectFolds(t *testing.T) {
	m := validMessage()
	m.Subject = "Ihre Bestellung " + strings.Repeat("ü", 60) + " ist da"
	_, raw, err := compose(m, testDate)
	if err != nil {
		t.Fatalf("compose: %v", err)
	}
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	// Eight headers, the subject folded over at least two more lines. Each
	// encoded-word is at most 75 characters, so no line comes near the
	// 998-character limit however long the subject is.
	if len(lines) < 10 {
		t.Errorf("subject not folded:\n%s", head)
	}
	for _, line := range lines {
		if len(line) > 9+75 { // "Subject: " plus one encoded-word
			t.Errorf("header line of %d characters: %q", len(line), line)
		}
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("parse composed message: %v", err)
	}
	got, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("decode subject: %v", err)
	}
	if got != m.Subject {
		t.Errorf("decoded subject = %q, want %q", got, m.Subject)
	}
}

func TestComposeLongBodyLineWraps(t *testing.T) {
	m := validMessage()
	m.Body = strings.Repeat("x", 80)
	_, raw, err := compose(m, testDate)
	if err != nil {
		t.Fatalf("compose: %v", err)
	}
	_, body, _ := strings.Cut(string(raw), "\r\n\r\n")
	want := strings.Repeat("x", 75) + "=\r\n" + strings.Repeat("x", 5)
	if body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
}

func TestComposeRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Message)
	}{
		{"CRLF in To", func(m *Message) { m.To = "buyer@example.com\r\nBcc: victim@example.com" }},
		{"LF in To", func(m *Message) { m.To = "buyer@example.com\nBcc: victim@example.com" }},
		{"CR in From", func(m *Message) { m.From = "orders@orderd.test\rBcc: victim@example.com" }},
		{"LF in Subject", func(m *Message) { m.Subject = "Hi\nBcc: victim@example.com" }},
		{"CRLF in Subject", func(m *Message) { m.Subject = "Hi\r\n\r\nfake body" }},
		{"LF in MessageID", func(m *Message) { m.MessageID = "<a@b>\nBcc: victim@example.com" }},
		{"empty To", func(m *Message) { m.To = "" }},
		{"empty From", func(m *Message) { m.From = "" }},
		{"To without domain", func(m *Message) { m.To = "buyer" }},
		{"two recipients", func(m *Message) { m.To = "a@example.com, b@example.com" }},
		{"non-ASCII address", func(m *Message) { m.To = "zoë@example.com" }},
		{"empty MessageID", func(m *Message) { m.MessageID = "" }},
		{"MessageID without @", func(m *Message) { m.MessageID = "<order-42>" }},
		{"MessageID with space", func(m *Message) { m.MessageID = "<order 42@orderd>" }},
		{"MessageID with nested bracket", func(m *Message) { m.MessageID = "<<a@b>>" }},
		{"MessageID with two @", func(m *Message) { m.MessageID = "<a@b@c>" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validMessage()
			tt.modify(&m)
			_, raw, err := compose(m, testDate)
			if err == nil {
				t.Fatalf("compose succeeded, want error; message:\n%s", raw)
			}
			if !errors.Is(err, ErrInvalidMessage) || !IsPermanent(err) {
				t.Errorf("error %q: want permanent ErrInvalidMessage", err)
			}
		})
	}
}
