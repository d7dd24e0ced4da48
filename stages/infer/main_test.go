package infer

import (
	"testing"

	"go.uber.org/goleak"
)

// Workers, breaker timers and the goroutines that cancel a call whose items
// went stale must all end with their owner.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
