package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Secrets never reach a log line or an error message, by two means. A configuration value
// that is a secret has the type secret, which prints and logs as "[redacted]" however it is
// formatted. And text that may quote a secret without knowing it (a driver's error echoing a
// DSN, an SDK's error quoting a URL with its userinfo) passes through the configuration's
// redactor on its way out: every log attribute and message, and the error orderd exits with.

// redacted is what a secret is replaced with.
const redacted = "[redacted]"

// secret is a configuration value that must never be shown. Only reveal gives its value.
type secret string

func (s secret) reveal() string { return string(s) }

// String, GoString, Format, LogValue and MarshalText hide the value from fmt (every verb),
// slog and encoders.
func (secret) String() string               { return redacted }
func (secret) GoString() string             { return redacted }
func (secret) Format(f fmt.State, _ rune)   { fmt.Fprint(f, redacted) }
func (secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// minRedacted is the shortest secret redacted from text: a shorter one would garble every
// line it happens to occur in, and guards nothing.
const minRedacted = 4

// secrets returns every secret of the configuration: its secret-typed fields, the message
// signing key, the password in MYSQL_DSN, and the user and password in SQS_ENDPOINT.
func (c config) secrets() []string {
	var out []string
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		if s, ok := v.Field(i).Interface().(secret); ok {
			out = append(out, s.reveal())
		}
	}
	out = append(out, string(c.SigningKey))
	if mc, err := mysql.ParseDSN(c.MySQLDSN); err == nil {
		out = append(out, mc.Passwd)
	}
	if u, err := url.Parse(c.SQSEndpoint); err == nil && u.User != nil {
		p, _ := u.User.Password()
		out = append(out, u.User.Username(), p)
	}
	return out
}

// redactor returns the replacer of c's secrets, as written and as URLs escape them.
func (c config) redactor() *strings.Replacer {
	seen := map[string]bool{}
	var pairs []string
	for _, s := range c.secrets() {
		if len(s) < minRedacted {
			continue
		}
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s), url.User(s).String()} {
			if !seen[form] {
				seen[form] = true
				pairs = append(pairs, form, redacted)
			}
		}
	}
	return strings.NewReplacer(pairs...)
}

// redactAttr is a slog ReplaceAttr that passes every string, error and other value through
// rd (the message too: slog hands it over as the attribute "msg").
func redactAttr(rd *strings.Replacer) func([]string, slog.Attr) slog.Attr {
	return func(_ []string, a slog.Attr) slog.Attr {
		var s string
		switch a.Value.Kind() {
		case slog.KindString:
			s = a.Value.String()
		case slog.KindAny:
			switch v := a.Value.Any().(type) {
			case error:
				s = v.Error()
			default:
				s = fmt.Sprint(v)
			}
		default:
			return a // numbers, times, durations, levels
		}
		if r := rd.Replace(s); r != s {
			a.Value = slog.StringValue(r)
		}
		return a
	}
}

// redactedError is err with its message passed through a redactor; errors.Is and As still
// see err.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redactError(rd *strings.Replacer, err error) error {
	if err == nil {
		return nil
	}
	if msg := rd.Replace(err.Error()); msg != err.Error() {
		return &redactedError{err: err, msg: msg}
	}
	return err
}

// redactURL returns u without its userinfo, for messages.
func redactURL(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil && strings.Contains(u, "@"):
		return "(not shown: it may hold credentials)"
	case err != nil || p.User == nil:
		return u
	}
	p.User = url.User("redacted")
	return p.String()
}
