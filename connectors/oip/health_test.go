package oip

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Readiness and metadata at start: an error that names what is wrong.
func TestCheck(t *testing.T) {
	cases := []struct {
		name   string
		expect []Input
		answer func(w http.ResponseWriter, r *http.Request) bool
		want   string // "" ok
	}{
		{name: "ready, no inputs expected"},
		{name: "inputs match", expect: []Input{{Name: "x", Datatype: "FP64", Shape: []int64{-1, 4}}}},
		{name: "wildcard on our side", expect: []Input{{Name: "x", Datatype: "FP64", Shape: []int64{3, -1}}}},
		{name: "name only", expect: []Input{{Name: "x"}}},
		{name: "missing input", expect: []Input{{Name: "features", Datatype: "FP64"}},
			want: `input "features": the server's metadata has no such input (it has ["x"])`},
		{name: "datatype", expect: []Input{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}},
			want: `input "x": configured datatype FP32, the server's metadata says FP64`},
		{name: "shape", expect: []Input{{Name: "x", Datatype: "FP64", Shape: []int64{-1, 3}}},
			want: `input "x": configured shape [-1 3], the server's metadata says [-1 4]`},
		{name: "rank", expect: []Input{{Name: "x", Shape: []int64{4}}},
			want: `configured shape [4], the server's metadata says [-1 4]`},
		{name: "not ready", answer: func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/ready") {
				w.WriteHeader(http.StatusServiceUnavailable)
				return true
			}
			return false
		}, want: "HTTP 503 Service Unavailable"},
		{name: "unknown model", answer: func(w http.ResponseWriter, r *http.Request) bool {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"Model echo not found"}`)
			return true
		}, want: "HTTP 404 Not Found: Model echo not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(t)
			if c.answer != nil {
				f.answer = func(w http.ResponseWriter, r *http.Request, _ *fakeRequest) bool { return c.answer(w, r) }
			}
			m := newModel(t, f.URL, ExpectInputs(c.expect))
			err := m.Check(ctx(t))
			switch {
			case c.want == "" && err != nil:
				t.Errorf("got %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("got %v, want it to say %q", err, c.want)
			case c.want != "" && !strings.Contains(err.Error(), "oip: model echo at "+f.URL):
				t.Errorf("%v does not name the model and the server", err)
			}
		})
	}
}

// Ready is the breaker's probe: nil when ready, transient otherwise.
func TestReady(t *testing.T) {
	f := newFake(t)
	ready := true
	f.answer = func(w http.ResponseWriter, r *http.Request, _ *fakeRequest) bool {
		if r.URL.Path != "/v2/models/echo/versions/3/ready" {
			t.Errorf("path %s", r.URL.Path)
		}
		if !ready {
			w.WriteHeader(http.StatusBadRequest)
			return true
		}
		return false
	}
	m := newModel(t, f.URL, Version("3"))
	if err := m.Ready(ctx(t)); err != nil {
		t.Fatal(err)
	}
	ready = false
	if err := m.Ready(ctx(t)); err == nil || !pipeline.Retryable(err) {
		t.Errorf("not ready: %v, want a transient error", err)
	}
	f.Close()
	if err := m.Ready(ctx(t)); err == nil || !pipeline.Retryable(err) {
		t.Errorf("down: %v, want a transient error", err)
	}
}

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, made for the test.
type pki struct {
	roots  *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newPKI(t *testing.T) pki {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(n int64, usage x509.ExtKeyUsage) tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: fmt.Sprint("leaf ", n)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	p := pki{roots: x509.NewCertPool(), server: leaf(2, x509.ExtKeyUsageServerAuth), client: leaf(3, x509.ExtKeyUsageClientAuth)}
	p.roots.AddCert(ca)
	return p
}

// TLS with a private CA and a client certificate (mutual TLS), and the
// configured authentication header on every request; without them the fake
// refuses.
func TestTLSAndAuth(t *testing.T) {
	p := newPKI(t)
	f := &fakeServer{}
	f.Server = httptest.NewUnstartedServer(f)
	f.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes below
	f.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.roots, ClientAuth: tls.RequireAndVerifyClientCert}
	f.StartTLS()
	t.Cleanup(f.Close)
	f.answer = func(w http.ResponseWriter, r *http.Request, _ *fakeRequest) bool {
		if r.Header.Get("Authorization") != "Bearer s3cret" && r.Header.Get("X-Api-Key") != "k3y" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"who are you"}`)
			return true
		}
		if r.Proto != "HTTP/1.1" {
			t.Errorf("protocol %s, want HTTP/1.1", r.Proto)
		}
		return false
	}
	batch := []*schemas.Request{request("a", fp64("x", []int64{1}, 1))}
	mtls := &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client}}

	for _, auth := range []Option{BearerToken("s3cret"), Header("X-Api-Key", "k3y")} {
		m := newModel(t, f.URL, TLS(mtls), auth)
		if err := m.Check(ctx(t)); err != nil {
			t.Errorf("check: %v", err)
		}
		if _, err := m.Infer(ctx(t), batch); err != nil {
			t.Errorf("infer: %v", err)
		}
	}
	// No token: the server's refusal, transient (no input is at fault) and
	// named at start.
	m := newModel(t, f.URL, TLS(mtls))
	if _, err := m.Infer(ctx(t), batch); err == nil || !pipeline.Retryable(err) || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("no token: %v", err)
	}
	if err := m.Check(ctx(t)); err == nil || !strings.Contains(err.Error(), "who are you") {
		t.Errorf("check without a token: %v", err)
	}
	// No client certificate, or not trusting the CA: the handshake fails.
	for name, tc := range map[string]*tls.Config{
		"no client certificate": {RootCAs: p.roots},
		"unknown CA":            {Certificates: []tls.Certificate{p.client}},
	} {
		m := newModel(t, f.URL, TLS(tc), BearerToken("s3cret"))
		if err := m.Check(ctx(t)); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
	if len(f.Calls()) != 3 {
		t.Errorf("%d calls reached the model, want 3", len(f.Calls()))
	}
}

// The pool holds at most MaxConnections connections: more concurrent calls
// wait for one instead of opening more.
func TestConnectionPoolIsBounded(t *testing.T) {
	var conns atomic.Int32
	f := newFake(t, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	release := make(chan struct{})
	inflight := make(chan struct{}, 100)
	f.answer = func(http.ResponseWriter, *http.Request, *fakeRequest) bool {
		inflight <- struct{}{}
		<-release
		return false
	}
	m := newModel(t, f.URL, MaxConnections(2))
	done := make(chan error)
	for i := range 6 {
		go func() {
			_, err := m.Infer(ctx(t), []*schemas.Request{request(fmt.Sprint(i), fp64("x", []int64{1}, 1))})
			done <- err
		}()
	}
	<-inflight
	<-inflight
	select {
	case <-inflight:
		t.Error("a third call reached the server while two held both connections")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for range 6 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (kept alive and reused)", n)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, c := range []struct {
		url, name string
		opts      []Option
		want      string
	}{
		{"127.0.0.1:8080", "m", nil, "want http(s)://host[:port][/prefix]"},
		{"ftp://h", "m", nil, "want http(s)"},
		{"http://h?x=1", "m", nil, "no query"},
		{"http://h", "", nil, "no model name"},
		{"http://h", "m", []Option{MaxConnections(0)}, "max connections 0"},
		{"http://h", "m", []Option{Header("X Key", "v")}, "not a token"},
		{"http://h", "m", []Option{Header("X-Key", "v\n")}, "line break"},
		{"http://h", "m", []Option{ExpectInputs([]Input{{Name: "x", Datatype: "FP8"}})}, `unknown datatype "FP8"`},
	} {
		if _, err := New(c.url, c.name, c.opts...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q, %q): %v, want %q", c.url, c.name, err, c.want)
		}
	}
	m, err := New("http://h:1/prefix/", "a b")
	if err != nil || m.url("v 1", "/infer") != "http://h:1/prefix/v2/models/a%20b/versions/v%201/infer" {
		t.Errorf("%v %s", err, m.url("v 1", "/infer"))
	}
}
