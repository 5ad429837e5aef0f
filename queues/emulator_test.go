package queues

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// TestNoEmulatorRunsNoWorkaround: for SQS (and implementations that follow it) the seam
// hands back the HTTP client it was given and no receive schedule.
func TestNoEmulatorRunsNoWorkaround(t *testing.T) {
	inner := replyWith(`{}`)
	if got := NoEmulator.httpClient(inner); got != any(inner) {
		t.Errorf("NoEmulator wraps the HTTP client: %T", got)
	}
	if s := NoEmulator.stagger(4); s != nil {
		t.Errorf("NoEmulator staggers receivers: %+v", s)
	}
	if s := Goaws.stagger(1); s != nil {
		t.Errorf("one receiver staggered: %+v", s)
	}
	if s := Goaws.stagger(4); s == nil {
		t.Error("goaws: receivers not staggered")
	}
}

// TestGoawsRepliesTakeSQSsShape: goaws's list of enqueued batch entries becomes SQS's
// Successful; replies already in SQS's shape, and other operations, are left as they are.
func TestGoawsRepliesTakeSQSsShape(t *testing.T) {
	for _, c := range []struct{ op, reply, want string }{
		{"AmazonSQS.SendMessageBatch", `{"SendMessageBatchResultEntry":[{"Id":"0"}]}`, `{"Successful":[{"Id":"0"}]}`},
		{"AmazonSQS.SendMessageBatch", `{"Successful":[{"Id":"0"}],"Failed":[]}`, `{"Successful":[{"Id":"0"}],"Failed":[]}`},
		{"AmazonSQS.ReceiveMessage", `{"SendMessageBatchResultEntry":[]}`, `{"SendMessageBatchResultEntry":[]}`},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://goaws", nil)
		req.Header.Set("X-Amz-Target", c.op)
		resp, err := Goaws.httpClient(replyWith(c.reply)).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != c.want || resp.ContentLength != int64(len(body)) {
			t.Errorf("%s %s: got %s (length %d), want %s", c.op, c.reply, body, resp.ContentLength, c.want)
		}
	}
}

// replyWith is an HTTP client that answers every request with body.
type replyWith string

func (r replyWith) Do(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, ContentLength: int64(len(r)),
		Body: io.NopCloser(bytes.NewReader([]byte(r)))}, nil
}
