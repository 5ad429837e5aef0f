// Package mailpit is a small client for Mailpit's HTTP API (v1), for tests
// that need to see the email the service actually sent over SMTP.
package mailpit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// pageSize is how many summaries are asked for per request when listing.
const pageSize = 250

// pollInterval is how often WaitFor asks again. Mailpit stores a message
// before it answers the SMTP client, so the wait is usually one round.
const pollInterval = 25 * time.Millisecond

// Client talks to one Mailpit instance.
type Client struct {
	base string
	http *http.Client
}

// New returns a client for the Mailpit whose web UI and API are served at
// baseURL, e.g. "http://127.0.0.1:8025".
func New(baseURL string) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), http: http.DefaultClient}
}

// Address is a mailbox as Mailpit reports it.
type Address struct {
	Name    string
	Address string
}

// Summary is one entry in a message list, as returned by Messages, Search
// and WaitFor.
type Summary struct {
	// ID is Mailpit's own id, for Message.
	ID string
	// MessageID is the Message-ID header without its angle brackets.
	MessageID string
	From      Address
	To        []Address
	Cc        []Address
	Bcc       []Address
	// Subject is decoded from any RFC 2047 encoding.
	Subject string
	// Created is when Mailpit received the message.
	Created time.Time
	Read    bool
	Tags    []string
	Size    uint64
	// Snippet is the start of the body text.
	Snippet string
}

// Message is one stored message with its decoded body and raw headers.
type Message struct {
	// ID is Mailpit's own id.
	ID string
	// MessageID is the Message-ID header without its angle brackets.
	MessageID  string
	From       Address
	To         []Address
	Cc         []Address
	Bcc        []Address
	ReturnPath string
	// Subject is decoded from any RFC 2047 encoding.
	Subject string
	// Date is the Date header, or the time received if there is none.
	Date time.Time
	// Username is the SMTP AUTH user the message was sent as, if any.
	Username string
	// Text and HTML are the decoded bodies.
	Text string
	HTML string
	Size uint64
	// Header holds the headers as sent (values not decoded), keyed in
	// canonical form; use Header.Get("Message-ID").
	Header textproto.MIMEHeader `json:"-"`
}

// list is the shape of /api/v1/messages and /api/v1/search answers.
type list struct {
	// MessagesCount is every message for /messages, and every match for
	// /search.
	MessagesCount int       `json:"messages_count"`
	Messages      []Summary `json:"messages"`
}

// Messages returns every stored message, newest first.
func (c *Client) Messages(ctx context.Context) ([]Summary, error) {
	all, err := c.pages(ctx, "/api/v1/messages", url.Values{})
	if err != nil {
		return nil, fmt.Errorf("list mailpit messages: %w", err)
	}
	return all, nil
}

// Search returns every stored message matching query, newest first. The
// query uses Mailpit's search syntax, e.g. `to:ada@example.com` or
// `message-id:order-42-v4@orderd subject:"Order 42"`.
func (c *Client) Search(ctx context.Context, query string) ([]Summary, error) {
	all, err := c.pages(ctx, "/api/v1/search", url.Values{"query": {query}})
	if err != nil {
		return nil, fmt.Errorf("search mailpit for %q: %w", query, err)
	}
	return all, nil
}

// pages collects a list page by page. Mailpit pages by offset, newest first,
// so a message arriving meanwhile shifts the rest by one and would be seen
// twice; ids already seen are skipped.
func (c *Client) pages(ctx context.Context, path string, q url.Values) ([]Summary, error) {
	var all []Summary
	seen := make(map[string]bool)
	q.Set("limit", strconv.Itoa(pageSize))
	for start := 0; ; start += pageSize {
		q.Set("start", strconv.Itoa(start))
		var page list
		if err := c.get(ctx, path+"?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		for _, s := range page.Messages {
			if !seen[s.ID] {
				seen[s.ID] = true
				all = append(all, s)
			}
		}
		if len(page.Messages) < pageSize || start+pageSize >= page.MessagesCount {
			return all, nil
		}
	}
}

// Message returns the message with Mailpit id id, including its headers.
func (c *Client) Message(ctx context.Context, id string) (Message, error) {
	var m Message
	p := "/api/v1/message/" + url.PathEscape(id)
	if err := c.get(ctx, p, &m); err != nil {
		return Message{}, fmt.Errorf("get mailpit message %s: %w", id, err)
	}
	var h map[string][]string
	if err := c.get(ctx, p+"/headers", &h); err != nil {
		return Message{}, fmt.Errorf("get mailpit message %s headers: %w", id, err)
	}
	m.Header = textproto.MIMEHeader(h)
	return m, nil
}

// DeleteAll deletes every stored message. Tests that share a Mailpit with
// others should search for their own messages instead.
func (c *Client) DeleteAll(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"/api/v1/messages", nil)
	if err != nil {
		return fmt.Errorf("delete mailpit messages: %w", err)
	}
	if err := c.do(req, nil); err != nil {
		return fmt.Errorf("delete mailpit messages: %w", err)
	}
	return nil
}

// WaitFor polls until at least n messages match query (every message if
// query is empty) and returns them. Once ctx ends it returns the matches it
// last saw and an error saying how many that was; give ctx a deadline.
func (c *Client) WaitFor(ctx context.Context, query string, n int) ([]Summary, error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	var last []Summary
	var lastErr error
	for {
		var got []Summary
		var err error
		if query == "" {
			got, err = c.Messages(ctx)
		} else {
			got, err = c.Search(ctx, query)
		}
		switch {
		case err == nil && len(got) >= n:
			return got, nil
		case err == nil:
			last, lastErr = got, nil
		case ctx.Err() == nil:
			// Mailpit may still be starting; keep the error to report
			// if it never answers.
			lastErr = err
		}
		select {
		case <-ctx.Done():
			err := ctx.Err()
			if lastErr != nil {
				err = fmt.Errorf("%w (last error: %w)", err, lastErr)
			}
			return last, fmt.Errorf("wait for %d mailpit messages matching %q, saw %d: %w", n, query, len(last), err)
		case <-t.C:
		}
	}
}

// ChaosTrigger makes Mailpit's SMTP server answer a step with ErrorCode (400-599) in
// Probability percent of cases (0 turns it off).
type ChaosTrigger struct {
	ErrorCode   int
	Probability int
}

// ChaosTriggers are the steps Mailpit's chaos can fail: MAIL FROM (Sender), RCPT TO
// (Recipient) and AUTH (Authentication).
type ChaosTriggers struct {
	Sender, Recipient, Authentication ChaosTrigger
}

// SetChaos replaces the chaos triggers of a Mailpit started with --enable-chaos, so that a
// test can make its SMTP server fail as a real one does (a 451 "try again later", say) and
// then recover.
func (c *Client) SetChaos(ctx context.Context, triggers ChaosTriggers) error {
	body, err := json.Marshal(triggers)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/api/v1/chaos", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("set mailpit chaos: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := c.do(req, nil); err != nil {
		return fmt.Errorf("set mailpit chaos: %w", err)
	}
	return nil
}

// get fetches path and decodes its JSON answer into v.
func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v)
}

// do sends req and, for a 2xx answer, decodes its JSON body into v unless
// v is nil. Any other status is an error carrying the start of the body,
// which is where Mailpit explains itself.
func (c *Client) do(req *http.Request, v any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if v == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
