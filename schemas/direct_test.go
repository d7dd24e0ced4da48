package schemas

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
)

// The direct decoder is held to the reference (goavro's native form and the
// mapping of native_test.go): on every message, the same value or the same
// error, word for word. The head decoders are held to the full ones: the
// same error, the same head fields, and Invalid what Validate says.

// agree fails t unless v, err and the reference's ref, refErr are the same.
func agree[T any](t testing.TB, what string, v *T, err error, ref *T, refErr error) {
	t.Helper()
	switch {
	case (err == nil) != (refErr == nil):
		t.Errorf("%s: direct %+v, %v; reference %+v, %v", what, v, err, ref, refErr)
	case err != nil && err.Error() != refErr.Error():
		t.Errorf("%s: direct error\n%v\nreference error\n%v", what, err, refErr)
	case err != nil && errors.Is(err, ErrMalformed) != errors.Is(refErr, ErrMalformed):
		t.Errorf("%s: %v: malformed %v, reference %v", what, err, errors.Is(err, ErrMalformed), errors.Is(refErr, ErrMalformed))
	case err == nil && !same(v, ref):
		t.Errorf("%s: direct\n%+v\nreference\n%+v", what, v, ref)
	}
}

// sameError compares errors by their words.
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Error() == b.Error()
}

// agreeHeads fails t unless the head decoders agree with the full ones on b.
func agreeHeads(t testing.TB, c *Codec, b []byte) {
	t.Helper()
	ctx := context.Background()
	q, err := c.DecodeRequest(ctx, b)
	h, herr := c.DecodeRequestHead(ctx, b)
	switch {
	case !sameError(err, herr):
		t.Errorf("request head: %v; full: %v", herr, err)
	case err == nil:
		want := RequestHead{
			RequestID: q.RequestID, IdempotencyKey: q.IdempotencyKey, Tenant: q.Tenant, Model: q.Model,
			ModelVersion: q.ModelVersion, ReplyTopic: q.ReplyTopic, Priority: q.Priority,
			DeadlineMs: q.DeadlineMs, CreatedAtMs: q.CreatedAtMs,
		}
		got := *h
		got.Invalid = nil
		if !same(got, want) {
			t.Errorf("request head\n%+v\nfull\n%+v", got, want)
		}
		if !sameError(h.Invalid, q.Validate()) {
			t.Errorf("request head: Invalid %v; Validate %v", h.Invalid, q.Validate())
		}
	}
	r, err := c.DecodeResult(ctx, b)
	rh, herr := c.DecodeResultHead(ctx, b)
	switch {
	case !sameError(err, herr):
		t.Errorf("result head: %v; full: %v", herr, err)
	case err == nil:
		want := ResultHead{RequestID: r.RequestID, Status: r.Status, ErrorCode: r.ErrorCode,
			ErrorMessage: r.ErrorMessage, ReplyTopic: r.ReplyTopic, CreatedAtMs: r.CreatedAtMs}
		if !same(*rh, want) {
			t.Errorf("result head\n%+v\nfull\n%+v", *rh, want)
		}
	}
}

// agreeAll decodes b with every decoder of c and with the reference.
func agreeAll(t testing.TB, c *Codec, b []byte) {
	t.Helper()
	ctx := context.Background()
	q, err := c.DecodeRequest(ctx, b)
	rq, rerr := referenceRequest(ctx, c, b)
	agree(t, "request", q, err, rq, rerr)
	r, err := c.DecodeResult(ctx, b)
	rr, rerr := referenceResult(ctx, c, b)
	agree(t, "result", r, err, rr, rerr)
	d, err := c.DecodeDeadLetter(ctx, b)
	rd, rerr := referenceDeadLetter(ctx, c, b)
	agree(t, "dead letter", d, err, rd, rerr)
	e, err := c.DecodeStateEntry(ctx, b)
	re, rerr := referenceStateEntry(ctx, c, b)
	agree(t, "state entry", e, err, re, rerr)
	pr, err := c.DecodePressure(ctx, b)
	rpr, rerr := referencePressure(ctx, c, b)
	agree(t, "pressure", pr, err, rpr, rerr)
	agreeHeads(t, c, b)
}

// agreeBody decodes body, which w's scan accepted, as every kind, whatever
// w's record is named: with the direct decoder, with the reference, and with
// the head decoders. FuzzWriterSchema calls it on fuzzed schemas.
func agreeBody(t testing.TB, w *writerSchema, body []byte) {
	t.Helper()
	native, _, err := w.codec.NativeFromBinary(body)
	if err != nil {
		t.Fatalf("goavro: %v", err)
	}
	m, _ := native.(map[string]any)
	ref := func(k Kind, mapTo func(*conv) error) error {
		var cv conv
		if err := mapTo(&cv); cv.err == nil && err != nil {
			cv.err = err
		}
		if cv.err != nil {
			return malformedf("schemas: decode %s: %w", k, cv.err)
		}
		return nil
	}
	read := func(what string, f func(*reader)) {
		t.Helper()
		r := reader{buf: body}
		f(&r)
		if r.off != len(body) {
			t.Errorf("%s: the reader read %d bytes of %d", what, r.off, len(body))
		}
	}

	q := new(Request)
	var err1 error
	read("request", func(r *reader) { r.request(w.root, q, nil); err1 = r.end(KindRequest, requiredRequest(q)) })
	var rq *Request
	err2 := ref(KindRequest, func(cv *conv) error { rq = cv.request(rec{m: m, n: w.root}); return requiredRequest(rq) })
	agree(t, "request", q, err1, rq, err2)
	var hq Request
	var check requestCheck
	var herr error
	read("request head", func(r *reader) { r.request(w.root, &hq, &check); herr = r.end(KindRequest, requiredRequest(&hq)) })
	if !sameError(herr, err1) {
		t.Errorf("request head: %v; full: %v", herr, err1)
	} else if err1 == nil && !sameError(check.invalid(&hq), q.Validate()) {
		t.Errorf("request head: Invalid %v; Validate %v", check.invalid(&hq), q.Validate())
	}

	res := new(Result)
	read("result", func(r *reader) { r.result(w.root, res, true); err1 = r.end(KindResult, requiredResult(res)) })
	var rres *Result
	err2 = ref(KindResult, func(cv *conv) error { rres = cv.result(rec{m: m, n: w.root}); return requiredResult(rres) })
	agree(t, "result", res, err1, rres, err2)
	var hres Result
	read("result head", func(r *reader) { r.result(w.root, &hres, false); herr = r.end(KindResult, requiredResult(&hres)) })
	if !sameError(herr, err1) {
		t.Errorf("result head: %v; full: %v", herr, err1)
	}

	var d *DeadLetter
	read("dead letter", func(r *reader) {
		d = r.deadLetter(w.root)
		err1 = r.end(KindDeadLetter, required("reason", d.Reason))
	})
	var rd *DeadLetter
	err2 = ref(KindDeadLetter, func(cv *conv) error { rd = cv.deadLetter(rec{m: m, n: w.root}); return required("reason", rd.Reason) })
	agree(t, "dead letter", d, err1, rd, err2)

	var e *StateEntry
	read("state entry", func(r *reader) {
		e = r.stateEntry(w.root)
		err1 = r.end(KindStateEntry, required("key", e.Key, "request_id", e.RequestID))
	})
	var re *StateEntry
	err2 = ref(KindStateEntry, func(cv *conv) error {
		re = cv.stateEntry(rec{m: m, n: w.root})
		return required("key", re.Key, "request_id", re.RequestID)
	})
	agree(t, "state entry", e, err1, re, err2)

	var pr *Pressure
	read("pressure", func(r *reader) {
		pr = r.pressure(w.root)
		err1 = r.end(KindPressure, requiredPressure(pr))
	})
	var rpr *Pressure
	err2 = ref(KindPressure, func(cv *conv) error {
		rpr = cv.pressure(rec{m: m, n: w.root})
		return requiredPressure(rpr)
	})
	agree(t, "pressure", pr, err1, rpr, err2)
}

// clientMessages are the messages written with clients' own schemas.
func clientMessages(t testing.TB) [][]byte {
	msgs := [][]byte{clientRequestMessage(t)}
	for _, cs := range clientSchemas {
		msgs = append(msgs, goavroMessage(t, cs.id, cs.schema, cs.native))
	}
	return msgs
}

// Every fixture, every client's message, and each changed in every way
// that makes a decoder fail, agree.
func TestDirectAgreesWithReference(t *testing.T) {
	c, _ := newTestCodec(t)
	msgs := clientMessages(t)
	for _, m := range fixtures() {
		b, err := m.encode(c)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	r := typicalRequest()
	r.Inputs = append(r.Inputs, Tensor{Name: "features", Datatype: "FP64", FP64: []float64{math.NaN()}})
	invalid, err := c.EncodeRequest(topicRequests, r)
	if err != nil {
		t.Fatal(err)
	}
	msgs = append(msgs, invalid)
	for i, b := range msgs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			agreeAll(t, c, b)
			// Each byte changed, then cut short: most fail, in all kinds of
			// places, and some decode to other values.
			for j := HeaderSize; j < len(b); j++ {
				for _, v := range []byte{0, 1, 2, 3, 0x7f, 0x80, 0xff, b[j] + 2, b[j] - 2} {
					changed := append([]byte(nil), b...)
					changed[j] = v
					agreeAll(t, c, changed)
				}
				agreeAll(t, c, b[:j])
			}
		})
	}
}

// The head's Invalid is what Validate says of the full request, for every
// reason Validate knows that can travel on the wire.
func TestHeadInvalid(t *testing.T) {
	c, _ := newTestCodec(t)
	n := 0
	for _, tc := range validateCases() {
		b, err := c.EncodeRequest(topicRequests, tc.r)
		if err != nil {
			continue // no request id, or a parameter of a type the wire cannot carry
		}
		t.Run(tc.name, func(t *testing.T) {
			h, err := c.DecodeRequestHead(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			if !sameError(h.Invalid, tc.r.Validate()) {
				t.Errorf("Invalid %v; Validate %v", h.Invalid, tc.r.Validate())
			}
			agreeHeads(t, c, b)
		})
		n++
	}
	if n < 25 {
		t.Errorf("only %d of the validation cases encode", n)
	}
}

// What the direct decoder allocates stays under the scan's estimate, which
// is what the budget bounds.
func TestDirectDecoderWithinEstimate(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	msgs := clientMessages(t)
	for _, m := range fixtures() {
		b, err := m.encode(c)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	for _, r := range benchRequests() {
		b, err := c.EncodeRequest(topicRequests, r)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	large, _ := largeRequests(t, c)
	for _, b := range large {
		msgs = append(msgs, b)
	}
	for i, b := range msgs {
		id, _ := SchemaID(b)
		w, err := c.writer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		s := scanner{buf: b[HeaderSize:], budget: math.MaxInt64}
		if err := s.value(w.root); err != nil {
			t.Fatal(err)
		}
		var decode func() error
		switch w.root.shortName() {
		case "Request":
			decode = func() error { _, err := c.DecodeRequest(ctx, b); return err }
		case "Result":
			decode = func() error { _, err := c.DecodeResult(ctx, b); return err }
		case "DeadLetter":
			decode = func() error { _, err := c.DecodeDeadLetter(ctx, b); return err }
		case "Pressure":
			decode = func() error { _, err := c.DecodePressure(ctx, b); return err }
		default:
			decode = func() error { _, err := c.DecodeStateEntry(ctx, b); return err }
		}
		total, _ := allocated(func() {
			if err := decode(); err != nil {
				t.Error(err)
			}
		})
		if total > s.cost {
			t.Errorf("message %d of %d bytes: the direct decoder allocated %d bytes, over the estimate of %d", i, len(b), total, s.cost)
		}
	}
}
