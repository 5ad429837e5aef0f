// Package strictsqs is an SQS endpoint for tests that plays the rules real Amazon SQS
// applies to what it is sent, which the goaws emulator lacks. goaws accepts any message;
// SQS refuses characters outside #x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD |
// #x10000–#x10FFFF, messages over the size limit, more than 10 attributes, empty or badly
// named attributes, and batches over the size limit. A test that must see what a producer
// does when SQS refuses a message points its client at a Front: it checks SendMessage and
// SendMessageBatch requests against those rules and answers a refusal as SQS does over the
// JSON protocol (the code in X-Amzn-Query-Error and __type, which aws-sdk-go-v2 reads as the
// error's code and the client's fault); what passes goes on to goaws, which does the rest.
//
// How SQS answers a batch, from its documentation and from replies recorded against it
// (LocalStack's validated snapshots, producers' incident reports): an entry whose body has a
// character SQS refuses, or that is too big, is failed alone in the reply's Failed list
// (SenderFault true, Code InvalidMessageContents or InvalidParameterValue) while the others
// are sent; a batch whose total is too big is refused whole (BatchRequestTooLong), and so is
// a batch with an entry whose attributes break a rule (InvalidParameterValue: "Number of
// message attributes [11] exceeds the allowed maximum [10]."). The texts of refusals SQS was
// not recorded giving are worded in its style. The front also gives goaws's SendMessageBatch
// reply the shape SQS gives it (Successful, Failed), which goaws misnames.
package strictsqs

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// Front is the strict SQS endpoint in front of an emulator.
type Front struct {
	upstream       *url.URL
	proxy          *httputil.ReverseProxy
	client         *http.Client
	maxMessageSize int
}

// New returns a front that forwards to the emulator at upstream (goaws's URL) and refuses
// messages over maxMessageSize bytes (0: DefaultMaxMessageSize).
func New(upstream string, maxMessageSize int) (*Front, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("strictsqs: upstream must be a URL, got %q", upstream)
	}
	if maxMessageSize <= 0 {
		maxMessageSize = DefaultMaxMessageSize
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	// A receive cut short by its client (a subscriber closing) is no news worth a log line.
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	return &Front{upstream: u, proxy: proxy, client: &http.Client{}, maxMessageSize: maxMessageSize}, nil
}

// Start serves a front to upstream until the test ends and returns its URL, to be used as
// the SQS endpoint.
func Start(t testing.TB, upstream string) string {
	t.Helper()
	f, err := New(upstream, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

// ServeHTTP implements http.Handler.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Header.Get("X-Amz-Target") {
	case "AmazonSQS.SendMessage":
		f.sendMessage(w, r)
	case "AmazonSQS.SendMessageBatch":
		f.sendMessageBatch(w, r)
	default:
		f.proxy.ServeHTTP(w, r)
	}
}

func (f *Front) sendMessage(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		f.forward(w, r, body, nil)
		return
	}
	if refusal := m.check(f.maxMessageSize); refusal != nil {
		writeError(w, refusal)
		return
	}
	f.forward(w, r, body, nil)
}

// failedEntry is a SendMessageBatch result's Failed entry.
type failedEntry struct {
	ID          string `json:"Id"`
	SenderFault bool   `json:"SenderFault"`
	Code        string `json:"Code"`
	Message     string `json:"Message"`
}

// sendMessageBatch refuses the whole request for the rules that apply to the batch and for an
// entry's attributes, and fails each entry whose body breaks a rule (its characters, its
// size) in the reply's Failed list; the other entries go to the emulator.
func (f *Front) sendMessageBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req map[string]json.RawMessage
	var raw []json.RawMessage
	if json.Unmarshal(body, &req) != nil || json.Unmarshal(req["Entries"], &raw) != nil {
		f.forward(w, r, body, nil)
		return
	}
	entries := make([]batchEntry, len(raw))
	for i, e := range raw {
		if err := json.Unmarshal(e, &entries[i]); err != nil {
			f.forward(w, r, body, nil)
			return
		}
	}
	if refusal := checkBatch(entries, f.maxMessageSize); refusal != nil {
		writeError(w, refusal)
		return
	}
	var pass []json.RawMessage
	failed := []failedEntry{}
	for i, e := range entries {
		if refusal := e.checkBody(f.maxMessageSize, true); refusal != nil {
			failed = append(failed, failedEntry{ID: e.ID, SenderFault: true, Code: refusal.Code, Message: refusal.Message})
			continue
		}
		pass = append(pass, raw[i])
	}
	if len(pass) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"Successful": []any{}, "Failed": failed})
		return
	}
	req["Entries"], _ = json.Marshal(pass)
	fwd, _ := json.Marshal(req)
	f.forward(w, r, fwd, failed)
}

// forward sends body to the emulator with r's headers and copies the reply back. For a
// SendMessageBatch reply it renames goaws's result list to SQS's Successful and adds failed
// to its Failed entries.
func (f *Front) forward(w http.ResponseWriter, r *http.Request, body []byte, failed []failedEntry) {
	u := *f.upstream
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.Header.Del("Content-Length")
	resp, err := f.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if resp.StatusCode == http.StatusOK && r.Header.Get("X-Amz-Target") == "AmazonSQS.SendMessageBatch" {
		reply = batchReply(reply, failed)
	}
	for k, vs := range resp.Header {
		if k != "Content-Length" {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(reply) //nolint:errcheck // the client went away
}

// batchReply turns goaws's SendMessageBatch reply into SQS's shape with failed added.
func batchReply(reply []byte, failed []failedEntry) []byte {
	var got map[string]json.RawMessage
	if json.Unmarshal(reply, &got) != nil {
		return reply
	}
	var successful, upstreamFailed []json.RawMessage
	json.Unmarshal(got["Successful"], &successful)                  //nolint:errcheck // absent: none
	json.Unmarshal(got["SendMessageBatchResultEntry"], &successful) //nolint:errcheck // goaws's name for it
	json.Unmarshal(got["Failed"], &upstreamFailed)                  //nolint:errcheck // absent: none
	for _, fe := range failed {
		b, _ := json.Marshal(fe)
		upstreamFailed = append(upstreamFailed, b)
	}
	if successful == nil {
		successful = []json.RawMessage{}
	}
	if upstreamFailed == nil {
		upstreamFailed = []json.RawMessage{}
	}
	out, _ := json.Marshal(map[string]any{"Successful": successful, "Failed": upstreamFailed})
	return out
}

// writeError answers a refused request as SQS does over the JSON protocol.
func writeError(w http.ResponseWriter, e *Error) {
	w.Header().Set("X-Amzn-Query-Error", e.Code+";Sender")
	writeJSON(w, http.StatusBadRequest, map[string]string{"__type": e.Type, "message": e.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-Requestid", rand.Text())
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
