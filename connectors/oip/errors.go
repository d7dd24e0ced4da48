package oip

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// MaxMessage bounds the server's error text carried into an error (and so
// into a FAILED result's error message).
const MaxMessage = 1024

// StatusError is an answer of the server other than 200 OK.
type StatusError struct {
	Model   string
	Code    int
	Message string // the server's error text, cut to MaxMessage bytes
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("oip: model %s: HTTP %d %s: %s", e.Model, e.Code, http.StatusText(e.Code), e.Message)
}

// classify is the one place that says what an answer of the server means
// for the batch (the contract of connectors/backend):
//
//   - 413, or any error whose text says the batch is too large or out of
//     memory: backend.TooLarge, the stage retries it smaller;
//   - 408, 425, 429, 502, 503, 504: the server is busy, restarting or behind
//     a proxy that lost it: transient, retried and counted by the breaker;
//   - 401, 403: the credentials are wrong or expired: transient too, since
//     no input is at fault; the breaker pauses the input until an operator
//     fixes them (the start-up check refuses wrong ones at once);
//   - 404: the model (or version) is not loaded, as while a server restarts
//     or reloads it: transient; a wrong name is refused at start;
//   - 400 "not ready yet" (MLServer answers a model still loading so):
//     transient;
//   - any other 4xx, 500 and 501: the input is bad. 500 is here because
//     servers answer a model's own exception so (MLServer's stock runtimes
//     do): retrying it would only stall the partition, splitting the batch
//     finds the input at fault;
//   - other 5xx: transient.
func classify(model string, code int, msg string) error {
	err := &StatusError{Model: model, Code: code, Message: msg}
	lower := strings.ToLower(msg)
	switch {
	case code == http.StatusRequestEntityTooLarge,
		strings.Contains(lower, "too large"), strings.Contains(lower, "out of memory"):
		return backend.TooLarge(err)
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests,
		code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout,
		code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound:
		return pipeline.Transient(err)
	case code == http.StatusBadRequest && strings.Contains(lower, "not ready"):
		return pipeline.Transient(err)
	case code >= 400 && code < 500, code == http.StatusInternalServerError, code == http.StatusNotImplemented:
		return err
	}
	return pipeline.Transient(err)
}

// message extracts the server's error text from an error body: the "error"
// member of a JSON object (the protocol's form), else a "detail" member as
// FastAPI's validation errors have it, else the body, cut to MaxMessage.
func message(body []byte) string {
	var msg string
	r := &reader{b: body}
	if r.peek() == '{' {
		_ = r.object(func(k []byte) error {
			switch string(k) {
			case "error":
				if r.peek() == '"' {
					s, err := r.string()
					msg = s
					return err
				}
			case "detail":
				if msg == "" {
					start := r.i
					err := r.skip(0)
					msg = strings.TrimSpace(string(body[start:r.i]))
					return err
				}
			}
			return r.skip(0)
		})
	}
	if msg == "" {
		msg = string(body)
	}
	return cut(strings.TrimSpace(msg), MaxMessage)
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " …(cut)"
	i := n - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}

// isTooLarge reports whether err is the too-large refusal.
func isTooLarge(err error) bool { return errors.Is(err, backend.ErrTooLarge) }
