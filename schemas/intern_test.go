package schemas

import (
	"fmt"
	"testing"
	"unsafe"
)

func TestIntern(t *testing.T) {
	a := intern([]byte("resnet-50"))
	b := intern([]byte("resnet-50"))
	if a != "resnet-50" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("intern twice: %q and %q, not one string", a, b)
	}
	if n := testing.AllocsPerRun(100, func() { _ = intern([]byte("resnet-50")) }); n != 0 {
		t.Errorf("a name seen before: %v allocations, want 0", n)
	}
	long := make([]byte, internMaxLen+1)
	for i := range long {
		long[i] = 'x'
	}
	if x, y := intern(long), intern(long); x != string(long) || unsafe.StringData(x) == unsafe.StringData(y) {
		t.Errorf("a name longer than %d interned", internMaxLen)
	}
	// Many names: each comes back as itself, whichever slot it lands in,
	// and the table does not grow.
	for i := range 5 * internSlots {
		want := fmt.Sprintf("model-%d", i)
		if got := intern([]byte(want)); got != want {
			t.Fatalf("intern(%q) = %q", want, got)
		}
	}
	if intern(nil) != "" || intern([]byte{}) != "" {
		t.Error("empty not empty")
	}
}

// A request's and a result's names decode interned: two messages naming
// the same model share one string.
func TestDecodeInternsNames(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := t.Context()
	req, err := c.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.EncodeResult(topicResults, fullResult())
	if err != nil {
		t.Fatal(err)
	}
	q1, err1 := c.DecodeRequest(ctx, req)
	q2, err2 := c.DecodeRequest(ctx, req)
	r1, err3 := c.DecodeResult(ctx, res)
	r2, err4 := c.DecodeResult(ctx, res)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		t.Fatal(err1, err2, err3, err4)
	}
	for _, p := range [][2]string{{q1.Model, q2.Model}, {q1.Tenant, q2.Tenant}, {q1.ReplyTopic, q2.ReplyTopic},
		{q1.Inputs[0].Name, q2.Inputs[0].Name}, {r1.Model, r2.Model}, {r1.ReplyTopic, r2.ReplyTopic}} {
		if p[0] == "" || unsafe.StringData(p[0]) != unsafe.StringData(p[1]) {
			t.Errorf("%q decoded twice: two strings", p[0])
		}
	}
}
