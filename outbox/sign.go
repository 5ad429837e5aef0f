package outbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// MetaSignature carries the relay's signature of a message (an SQS message attribute, the
// sixth of SQS's ten). With a signing key configured, stages act only on messages whose
// signature checks: anyone able to send to the queues cannot make a stage act, nor flag an
// order, with a message the relay did not send.
const MetaSignature = "signature"

// minSigningKeyLen is the shortest signing key accepted, in bytes: as long as SHA-256's
// output, so the key is not the weak part.
const minSigningKeyLen = 32

// SigningKey returns the signing key configured as s: nil when s is empty (messages are
// neither signed nor checked), an error when it is too short to be a secret.
func SigningKey(s string) ([]byte, error) {
	switch {
	case s == "":
		return nil, nil
	case len(s) < minSigningKeyLen:
		return nil, fmt.Errorf("must be at least %d bytes (e.g. the output of `openssl rand -base64 48`), got %d", minSigningKeyLen, len(s))
	}
	return []byte(s), nil
}

// signatureVersion names the scheme, so that keys or algorithms can change without a
// signature of one being read as another.
const signatureVersion = "v1."

// Signature returns the signature of a message: HMAC-SHA256 under key of its event id, event
// type and body, the parts a stage and a dead letter read.
func Signature(key []byte, eventID, eventType string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	// Lengths first, so that no split of the same bytes into other fields signs the same.
	mac.Write([]byte(signatureVersion))
	for _, part := range [][]byte{[]byte(eventID), []byte(eventType), body} {
		mac.Write(binary.BigEndian.AppendUint64(nil, uint64(len(part))))
		mac.Write(part)
	}
	return signatureVersion + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// VerifySignature reports whether sig is the signature of the message under key, in
// constant time.
func VerifySignature(key []byte, sig, eventID, eventType string, body []byte) bool {
	if !strings.HasPrefix(sig, signatureVersion) {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(Signature(key, eventID, eventType, body)))
}
