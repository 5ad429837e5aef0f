package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// smtpSink is an SMTP server inside loadgen that accepts every message and keeps none. With
// -smtp-sink, orderd's email goes there instead of to Mailpit: a shop's email leaves through
// a relay on another machine (a provider's SMTP endpoint), while Mailpit parses, stores and
// indexes every message on this one, at about as much CPU per order as MariaDB. The sink
// shows what the pipeline costs without that; orderd still sends every email over SMTP.
type smtpSink struct {
	srv      *smtp.Server
	ln       net.Listener
	messages atomic.Int64 // accepted after their final "."
	conns    atomic.Int64 // SMTP sessions opened
}

// startSMTPSink listens on a free port of 127.0.0.1 and serves until close.
func startSMTPSink() (*smtpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("smtp sink: %w", err)
	}
	s := &smtpSink{ln: ln}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		s.conns.Add(1)
		return sinkSession{s}, nil
	}))
	s.srv.Domain = "loadgen.localhost"
	s.srv.ErrorLog = log.New(io.Discard, "", 0) // a client hanging up mid-session is not news
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// addr is the sink's host:port, for orderd's SMTP_ADDR.
func (s *smtpSink) addr() string { return s.ln.Addr().String() }

func (s *smtpSink) close() { _ = s.srv.Close() }

// sinkSession takes any sender and recipient and reads each message to its end.
type sinkSession struct{ sink *smtpSink }

func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }

func (ss sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	ss.sink.messages.Add(1)
	return nil
}
