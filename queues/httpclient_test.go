package queues

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestHTTPClientBodyClosedAfterReply replays, step by step, the race httpClient exists for:
// the server answers as soon as it has the request body, the SDK closes that body when the
// headers are in, and only then does net/http's write loop make its second copy of the body.
// With the SDK's client the write fails with io.EOF (the transport then closes the connection
// under the reply); with httpClient it succeeds and the reply reads whole. If the first case
// stops failing, smithy-go has fixed its WriteTo and httpClient can go.
func TestHTTPClientBodyClosedAfterReply(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wrap      func(*awshttp.BuildableClient) aws.HTTPClient
		writeFail bool
	}{
		{"sdk client", func(c *awshttp.BuildableClient) aws.HTTPClient { return c }, true},
		{"httpClient", func(c *awshttp.BuildableClient) aws.HTTPClient { return httpClient{inner: c} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const reply = `{"Messages":[]}`
			body := []byte(`{"QueueUrl":"marker-7f3a"}`)
			proceed := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, err := io.ReadAll(r.Body); err != nil {
					return
				}
				io.WriteString(w, reply[:5])
				w.(http.Flusher).Flush() // the client has its headers: Do returns
				<-proceed
				io.WriteString(w, reply[5:])
			}))
			defer srv.Close()
			defer close(proceed)

			// The body's write returns only when the test lets it, after the SDK's close.
			release := make(chan struct{})
			client := tc.wrap(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
				tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return holdBodyConn{Conn: c, body: body, release: release}, nil
				}
			}))

			wrote := make(chan error, 1)
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(i httptrace.WroteRequestInfo) { wrote <- i.Err },
			})
			req := smithyhttp.NewStackRequest().(*smithyhttp.Request) // as the SDK builds one
			req.Method, req.ContentLength = http.MethodPost, int64(len(body))
			req.URL.Scheme, req.URL.Host = "http", srv.Listener.Addr().String()
			req, err := req.SetStream(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			built := req.Build(ctx)

			resp, err := client.Do(built)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			built.Body.Close() // what smithy-go's ClientHandler does once Do returns
			close(release)
			err = <-wrote
			if tc.writeFail {
				if err == nil {
					t.Fatal("the request write succeeded with the SDK's client: the race is gone upstream, httpClient may be removed")
				}
				return
			}
			if err != nil {
				t.Fatalf("request write failed after the body was closed: %v", err)
			}
			proceed <- struct{}{}
			got, err := io.ReadAll(resp.Body)
			if err != nil || string(got) != reply {
				t.Fatalf("reply = %q, %v; want %q", got, err, reply)
			}
		})
	}
}

// holdBodyConn blocks the write that carries body until release is closed.
type holdBodyConn struct {
	net.Conn
	body    []byte
	release chan struct{}
}

func (c holdBodyConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if bytes.Contains(p, c.body) {
		<-c.release
	}
	return n, err
}
