package mail

import (
	"errors"
	"fmt"
	"net/smtp"
	"slices"
	"strings"
)

// TLSMode says how a connection to the SMTP server is protected.
type TLSMode string

// The TLS modes. Whatever the mode, certificates are verified (against the
// system's roots unless SMTPConfig.RootCAs says otherwise), a failed upgrade
// is an error and never a fall back to plain text, and credentials are sent
// only over TLS.
const (
	// TLSRequired upgrades every connection with STARTTLS and fails if the
	// server does not offer it. The default when credentials are configured.
	TLSRequired TLSMode = "required"
	// TLSOpportunistic upgrades with STARTTLS when the server offers it and
	// sends in plain text when it does not (a local Mailpit); it then refuses
	// to authenticate. The default without credentials.
	TLSOpportunistic TLSMode = "opportunistic"
	// TLSImplicit speaks TLS from the first byte (SMTPS, usually port 465).
	TLSImplicit TLSMode = "implicit"
	// TLSOff never uses TLS; credentials are refused.
	TLSOff TLSMode = "off"
)

// TLSModes lists the modes, for messages that name them.
var TLSModes = []TLSMode{TLSRequired, TLSOpportunistic, TLSImplicit, TLSOff}

// authenticate logs in with PLAIN, or LOGIN when the server offers only that,
// and only over TLS: a server that did not upgrade the connection gets no
// AUTH command at all, whatever it advertises (without TLS, its advertisement
// may be an attacker's).
func authenticate(c *smtp.Client, host, username, password string) error {
	if _, ok := c.TLSConnectionState(); !ok {
		return errors.New("AUTH: refusing to send credentials without TLS (the server did not offer STARTTLS)")
	}
	ok, mechs := c.Extension("AUTH")
	if !ok {
		return errors.New("AUTH: credentials are configured but the server offers no authentication")
	}
	var a smtp.Auth
	switch offered := strings.Fields(strings.ToUpper(mechs)); {
	case slices.Contains(offered, "PLAIN"):
		a = smtp.PlainAuth("", username, password, host)
	case slices.Contains(offered, "LOGIN"):
		a = &loginAuth{username: username, password: password}
	default:
		return fmt.Errorf("AUTH: the server offers neither PLAIN nor LOGIN (it offers %s)", mechs)
	}
	if err := c.Auth(a); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	return nil
}

// loginAuth is the LOGIN mechanism (draft-murchison-sasl-login), which
// net/smtp lacks and some relays (older Exchange, some hosting providers)
// still offer alone: the server asks for the user name, then the password,
// each base64-encoded (net/smtp does the encoding). The prompts' wording
// varies between servers, so the answers go by their order, not their text.
type loginAuth struct {
	username, password string
	step               int
}

func (a *loginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS {
		return "", nil, errors.New("unencrypted connection")
	}
	a.step = 0
	return "LOGIN", nil, nil
}

func (a *loginAuth) Next(_ []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	a.step++
	switch a.step {
	case 1:
		return []byte(a.username), nil
	case 2:
		return []byte(a.password), nil
	}
	return nil, errors.New("LOGIN: unexpected third challenge")
}
