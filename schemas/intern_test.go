package schemas

import (
	"fmt"
	"hash/maphash"
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
// the same model share one string. The table keeps the newest name of a
// slot, so a name that shares its slot with another name of the same
// message (about one process in ten, with the seed drawn at start) is
// made again each time, by design: such a name is not checked.
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
	reqSole, resSole := soleInSlot(requestStrings(fullRequest())), soleInSlot(resultStrings(fullResult()))
	checked := 0
	for _, p := range []struct {
		a, b string
		sole map[string]bool
	}{
		{q1.Model, q2.Model, reqSole}, {q1.Tenant, q2.Tenant, reqSole},
		{q1.ReplyTopic, q2.ReplyTopic, reqSole}, {q1.Inputs[0].Name, q2.Inputs[0].Name, reqSole},
		{r1.Model, r2.Model, resSole}, {r1.ReplyTopic, r2.ReplyTopic, resSole},
	} {
		if p.a == "" || p.a != p.b {
			t.Fatalf("decoded %q, then %q", p.a, p.b)
		}
		if !p.sole[p.a] {
			t.Logf("%q shares its slot with another name of its message: not checked", p.a)
			continue
		}
		checked++
		if unsafe.StringData(p.a) != unsafe.StringData(p.b) {
			t.Errorf("%q decoded twice: two strings", p.a)
		}
	}
	if checked == 0 {
		t.Error("every name shares a slot: nothing checked")
	}
}

// soleInSlot says, for each string, whether no other of them hashes to its
// slot of the intern table.
func soleInSlot(ss []string) map[string]bool {
	bySlot := map[uint64]map[string]bool{}
	for _, s := range ss {
		k := maphash.String(internSeed, s) & (internSlots - 1)
		if bySlot[k] == nil {
			bySlot[k] = map[string]bool{}
		}
		bySlot[k][s] = true
	}
	sole := map[string]bool{}
	for _, s := range ss {
		sole[s] = len(bySlot[maphash.String(internSeed, s)&(internSlots-1)]) == 1
	}
	return sole
}

// requestStrings lists every string of a request that decoding could
// intern (more than it does is harmless: a name is only skipped).
func requestStrings(q *Request) []string {
	ss := []string{q.RequestID, q.IdempotencyKey, q.Tenant, q.Model, q.ModelVersion, q.ReplyTopic}
	for _, in := range q.Inputs {
		ss = append(ss, in.Name, in.Datatype)
	}
	for k, v := range q.Parameters {
		ss = append(ss, k)
		if s, ok := v.(string); ok {
			ss = append(ss, s)
		}
	}
	return ss
}

func resultStrings(r *Result) []string {
	ss := []string{r.RequestID, r.IdempotencyKey, r.Tenant, string(r.Status), r.Reason, r.ErrorCode, r.ErrorMessage,
		r.OriginalRequestID, string(r.OriginalStatus), r.Model, r.ModelVersion, r.ReplyTopic}
	for _, out := range r.Outputs {
		ss = append(ss, out.Name, out.Datatype)
	}
	return ss
}
