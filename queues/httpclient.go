package queues

import (
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// httpClient is the SDK's HTTP client with one fix, for a race that lost received
// messages.
//
// The SDK wraps each request body in a reader that it closes as soon as the response headers
// are in (smithy-go's ClientHandler), and whose WriteTo returns io.EOF once closed. net/http
// sends a body with a known length in two copies: the declared bytes, then a copy of anything
// left over, for which io.Copy uses WriteTo. When the server answers between the two (goaws
// does, under load: the body went out unbuffered and it needs nothing more), that second copy
// fails with io.EOF, the transport takes the request as failed to write and closes the
// connection, and the response body, still being read, fails "use of closed network
// connection". The SDK then retries the call; for ReceiveMessage the first reply's messages
// were already handed out, so they stayed hidden for their visibility timeout. Hiding WriteTo
// makes the second copy use Read, which reports a closed body as a plain end of data.
//
// It is not behind the Emulator seam: the race is the client's, and any server may answer
// before it has read a request's body (HTTP allows it, and fronts do so with errors). It
// costs a shallow copy of the request per call.
type httpClient struct{ inner aws.HTTPClient }

// Do sends r with its body's WriteTo hidden; see httpClient.
func (c httpClient) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		shallow := *r // the caller's request keeps its own body, as http.Client expects
		shallow.Body = readOnlyBody{r.Body}
		r = &shallow
	}
	return c.inner.Do(r)
}

// readOnlyBody is an io.ReadCloser and nothing else, so that io.Copy calls Read.
type readOnlyBody struct{ io.ReadCloser }
