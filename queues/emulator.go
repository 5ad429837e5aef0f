package queues

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Emulator names an SQS emulator whose departures from SQS this package works around. It is
// the one place those workarounds are chosen: the zero value, SQS itself or an implementation
// that answers as SQS's API reference says (local-aws-sqs), runs none of them.
type Emulator string

const (
	// NoEmulator is SQS, or an implementation that follows its API reference.
	NoEmulator Emulator = ""
	// Goaws is the goaws emulator (github.com/Admiral-Piett/goaws v0.5.4), which the
	// project's scripts and tests run. It departs from SQS in two ways that matter here:
	//   - a long poll looks for messages every 100 ms (goawsPollTick) instead of returning
	//     when one arrives, so receivers that start again together wait the same tick;
	//   - its SendMessageBatch reply lists the entries it enqueued under
	//     SendMessageBatchResultEntry instead of Successful.
	Goaws Emulator = "goaws"
)

// ParseEmulator reads an emulator's name as the SQS_EMULATOR setting writes it: empty (or
// "none") for SQS and implementations that follow it, or "goaws".
func ParseEmulator(s string) (Emulator, error) {
	switch Emulator(s) {
	case NoEmulator, "none":
		return NoEmulator, nil
	case Goaws:
		return Goaws, nil
	}
	return "", fmt.Errorf("unknown SQS emulator %q: want goaws, or empty for SQS and implementations that follow it", s)
}

// goawsPollTick is how often goaws looks for messages during a long poll.
const goawsPollTick = 100 * time.Millisecond

// httpClient returns the HTTP client the SDK uses against e: inner itself, or for goaws one
// that turns its replies into the shape SQS gives them.
func (e Emulator) httpClient(inner aws.HTTPClient) aws.HTTPClient {
	if e == Goaws {
		return goawsReplies{inner: inner}
	}
	return inner
}

// goawsReplies renames the list of enqueued entries in goaws's SendMessageBatch reply to
// SQS's Successful, so that BatchPublisher reads it as SQS's: an entry a reply lists neither
// as successful nor as failed is taken as not delivered.
type goawsReplies struct{ inner aws.HTTPClient }

func (c goawsReplies) Do(r *http.Request) (*http.Response, error) {
	resp, err := c.inner.Do(r)
	if err != nil || r.Header.Get("X-Amz-Target") != "AmazonSQS.SendMessageBatch" || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var reply map[string]json.RawMessage
	if json.Unmarshal(body, &reply) == nil && reply["Successful"] == nil && reply["SendMessageBatchResultEntry"] != nil {
		reply["Successful"] = reply["SendMessageBatchResultEntry"]
		delete(reply, "SendMessageBatchResultEntry")
		if renamed, err := json.Marshal(reply); err == nil {
			body = renamed
		}
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// receiveStagger spreads a subscription's receivers over goaws's poll tick. goaws looks for
// messages every 100 ms from the start of each receive, so receivers that start again
// together look at the same instants and the second one shortens no wait; and they do start
// again together: the one that got a message and the ones that lost the race to it. Each
// receiver starts at its own slot of that cycle instead. SQS answers a long poll when a
// message arrives and needs none of this.
type receiveStagger struct {
	started   time.Time
	receivers int
}

// stagger returns the receive schedule for e, nil for SQS.
func (e Emulator) stagger(receivers int) *receiveStagger {
	if e != Goaws || receivers < 2 {
		return nil
	}
	return &receiveStagger{started: time.Now(), receivers: receivers}
}

// first waits until receiver's first slot, so that the receivers do not start all at once;
// false if ctx ended first.
func (s *receiveStagger) first(ctx context.Context, receiver int) bool {
	return sleep(ctx, s.slot(receiver)-time.Since(s.started))
}

// wait waits until receiver's next slot of the poll cycle, counted from the subscription's
// start; false if ctx ended first.
func (s *receiveStagger) wait(ctx context.Context, receiver int) bool {
	d := (s.slot(receiver) - time.Since(s.started)) % goawsPollTick
	if d < 0 {
		d += goawsPollTick
	}
	return sleep(ctx, d)
}

func (s *receiveStagger) slot(receiver int) time.Duration {
	return goawsPollTick * time.Duration(receiver) / time.Duration(s.receivers)
}

// sleep waits d; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
