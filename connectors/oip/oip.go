// Package oip is the model backend that speaks the Open Inference Protocol v2
// (the KServe "v2" protocol that KServe, Triton, MLServer and Seldon serve)
// over HTTP/1.1: it owns turning a batch of requests into inference calls,
// the connection pool they share, the model's health and metadata checks,
// and what each answer of the server means (connectors/backend's contract).
//
// A batch becomes as few calls as it can: requests whose inputs agree on
// names, datatypes and trailing shapes (and on version and parameters) go in
// one POST /v2/models/{name}[/versions/{v}]/infer, each input concatenated
// along the first dimension; every output is split back by it. Requests
// that cannot share a call go in calls of their own, concurrently, and
// never fail each other.
package oip

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Input is an input the model is expected to declare in its metadata,
// checked at start by Check. A -1 dimension matches any.
type Input struct {
	Name     string
	Datatype string
	Shape    []int64
}

// Option configures a Model.
type Option func(*cfg)

type cfg struct {
	version  string
	maxConns int
	tls      *tls.Config
	header   string
	value    string
	inputs   []Input
	maxBody  int64
	binary   bool
}

// DefaultMaxConnections is the pool's bound unless MaxConnections says.
const DefaultMaxConnections = 16

func defaultCfg() cfg { return cfg{maxConns: DefaultMaxConnections, maxBody: 256 << 20} }

// Version addresses a version of the model (/versions/{v}); a request's own
// model_version, when set, wins. Default: none (the server's choice).
func Version(v string) Option { return func(c *cfg) { c.version = v } }

// MaxConnections bounds the connections to the server (kept alive and
// reused); calls beyond it wait for one. Default 16.
func MaxConnections(n int) Option { return func(c *cfg) { c.maxConns = n } }

// TLS sets the client's TLS configuration (CA, client certificate); an
// https URL without it uses the system's roots. Default: none.
func TLS(t *tls.Config) Option { return func(c *cfg) { c.tls = t } }

// BearerToken sends "Authorization: Bearer <token>" with every call.
// Default: no authentication.
func BearerToken(token string) Option {
	return func(c *cfg) { c.header, c.value = "Authorization", "Bearer "+token }
}

// Header sends a header of its own with every call (an API key).
// Default: none.
func Header(name, value string) Option { return func(c *cfg) { c.header, c.value = name, value } }

// ExpectInputs are the inputs Check requires the model's metadata to
// declare. Default: none (Check only asks that the model exists and is
// ready).
func ExpectInputs(in []Input) Option { return func(c *cfg) { c.inputs = in } }

// BinaryData sends inputs and asks for outputs in the binary tensor data
// extension (Triton's, which KServe's Python server also reads) instead of
// JSON: for large tensors most of a call's cost on both sides is formatting
// and parsing numbers. Only for servers that accept it (MLServer 1.7.1 does
// not). Default false.
func BinaryData(on bool) Option { return func(c *cfg) { c.binary = on } }

// MaxResponseBytes bounds a response body. Default 256 MiB.
func MaxResponseBytes(n int64) Option { return func(c *cfg) { c.maxBody = n } }

func (c *cfg) validate() error {
	var errs []error
	if c.maxConns < 1 {
		errs = append(errs, fmt.Errorf("max connections %d: want at least 1", c.maxConns))
	}
	if c.header != "" && strings.ContainsAny(c.header, " :\r\n") {
		errs = append(errs, fmt.Errorf("header name %q is not a token", c.header))
	}
	if strings.ContainsAny(c.value, "\r\n") {
		errs = append(errs, errors.New("header value holds a line break"))
	}
	if c.maxBody < 1 {
		errs = append(errs, fmt.Errorf("max response bytes %d: want at least 1", c.maxBody))
	}
	for i, in := range c.inputs {
		if in.Name == "" {
			errs = append(errs, fmt.Errorf("expected input %d: no name", i))
		}
		if _, ok := elemSize[in.Datatype]; in.Datatype != "" && !ok {
			errs = append(errs, fmt.Errorf("expected input %q: unknown datatype %q", in.Name, in.Datatype))
		}
	}
	return errors.Join(errs...)
}

// Model is a model served by an OIP v2 server. It is safe for concurrent
// use: the infer stage's workers call Infer at once, and share its pool.
type Model struct {
	name   string // the model's name on the server
	base   string // the server's URL, no trailing slash
	cfg    cfg
	client *http.Client
	infer  string // the infer URL of the configured version
	bufs   sync.Pool
}

// New returns the backend for model name at the server baseURL
// (http://host:port or https://…, with an optional path prefix). It does not
// connect: Check does, at start.
func New(baseURL, name string, opts ...Option) (*Model, error) {
	c := defaultCfg()
	for _, o := range opts {
		o(&c)
	}
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("oip: url %q: want http(s)://host[:port][/prefix]: %w", baseURL, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("oip: url %q: want http(s)://host[:port][/prefix]", baseURL)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("oip: url %q: no query or fragment please", baseURL)
	case name == "":
		return nil, errors.New("oip: no model name")
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("oip: model %s: %w", name, err)
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     c.tls,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxConnsPerHost:     c.maxConns,
		MaxIdleConns:        c.maxConns,
		MaxIdleConnsPerHost: c.maxConns,
		IdleConnTimeout:     90 * time.Second,
		// Tensors compress poorly and the CPU is better spent elsewhere.
		DisableCompression: true,
	}
	// HTTP/1.1 with keep-alive: one call per connection at a time, so the
	// pool bound is the bound on concurrent calls the server sees.
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	m := &Model{name: name, base: strings.TrimRight(u.String(), "/"), cfg: c, client: &http.Client{Transport: tr}}
	m.infer = m.url(c.version, "/infer")
	return m, nil
}

// Name is the model's name on the server; URL its server.
func (m *Model) Name() string { return m.name }

// URL is the server's base URL.
func (m *Model) URL() string { return m.base }

// Close closes the idle connections.
func (m *Model) Close() { m.client.CloseIdleConnections() }

func (m *Model) url(version, suffix string) string {
	u := m.base + "/v2/models/" + url.PathEscape(m.name)
	if version != "" {
		u += "/versions/" + url.PathEscape(version)
	}
	return u + suffix
}

type buffer struct {
	b       []byte
	jsonLen int // of a binary request; -1: all JSON
}

func (m *Model) getBuf() *buffer {
	if b, ok := m.bufs.Get().(*buffer); ok {
		return b
	}
	return &buffer{b: make([]byte, 0, 4096)}
}

func (m *Model) putBuf(b *buffer) {
	if cap(b.b) <= 16<<20 { // a huge one once should not stay forever
		b.b = b.b[:0]
		m.bufs.Put(b)
	}
}

// Infer runs a batch (the infer stage's Model): one list of output tensors
// per request, in order, or an error as connectors/backend describes.
func (m *Model) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	gs := groups(batch, m.cfg.version)
	outs := make([][]schemas.Tensor, len(batch))
	if len(gs) == 1 {
		items := backend.NewItemErrors(len(batch))
		err := m.run(ctx, batch, gs[0], outs, items)
		if err == nil && items.Count() > 0 {
			err = items
		}
		return outs, err
	}
	errs := make([]error, len(gs))
	items := backend.NewItemErrors(len(batch))
	var wg sync.WaitGroup
	for k, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = m.run(ctx, batch, g, outs, items) // groups write disjoint items
		}()
	}
	wg.Wait()
	return outs, combine(gs, errs, items)
}

// combine turns the errors of a batch's calls into the batch's error.
func combine(gs []*group, errs []error, items backend.ItemErrors) error {
	transient := 0
	for k, err := range errs {
		switch {
		case err == nil:
		case isTooLarge(err):
			return err // retried smaller, every group again
		case pipeline.Retryable(err):
			transient++
		case len(gs[k].items) > 1:
			// A bad input in a call of several: which one is not known, so
			// the whole batch is bad and the stage splits it to find out.
			return err
		}
	}
	if transient == len(errs) {
		return errs[0] // the server is down for all: the breaker must see it
	}
	for k, err := range errs {
		if err != nil {
			for _, i := range gs[k].items {
				items[i] = err
			}
		}
	}
	if items.Count() == 0 {
		return nil
	}
	return items
}

// run makes g's call and sets outs (and items, for requests that failed
// before the call, alone) of its requests.
func (m *Model) run(ctx context.Context, batch []*schemas.Request, g *group, outs [][]schemas.Tensor, items backend.ItemErrors) error {
	buf := m.getBuf()
	defer m.putBuf(buf)
	for {
		var err error
		buf.b, buf.jsonLen, err = appendRequestForm(buf.b[:0], batch, g, m.cfg.binary)
		if !m.cfg.binary {
			buf.jsonLen = -1
		}
		var ie *itemError
		if !errors.As(err, &ie) {
			break
		}
		// That request cannot travel: it fails alone, the rest go on.
		i := g.items[ie.item]
		items[i] = fmt.Errorf("oip: model %s: %w", m.name, ie.err)
		g.rows -= g.rowsOf[ie.item]
		g.items = slices.Delete(g.items, ie.item, ie.item+1)
		g.rowsOf = slices.Delete(g.rowsOf, ie.item, ie.item+1)
		if len(g.items) == 0 {
			return nil
		}
	}
	u := m.infer
	if g.version != m.cfg.version {
		u = m.url(g.version, "/infer")
	}
	body, jsonLen, err := m.post(ctx, u, buf)
	if err != nil {
		return err
	}
	res, err := decodeBody(body, jsonLen)
	if err != nil {
		return fmt.Errorf("oip: model %s: response: %w", m.name, err)
	}
	return m.split(res, g, outs)
}

// post sends the request in buf (reusing buf for the answer) and returns
// the 200 answer's body and the length of its JSON part (-1: all JSON), or
// the error its status means.
func (m *Model) post(ctx context.Context, u string, buf *buffer) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(buf.b))
	if err != nil {
		return nil, 0, fmt.Errorf("oip: model %s: %w", m.name, err)
	}
	if buf.jsonLen >= 0 {
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set(binaryHeader, strconv.Itoa(buf.jsonLen))
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if m.cfg.header != "" {
		req.Header.Set(m.cfg.header, m.cfg.value)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		// Refused, reset, timed out, cancelled: never the input's fault.
		return nil, 0, pipeline.Transient(fmt.Errorf("oip: model %s: %w", m.name, err))
	}
	defer resp.Body.Close() //nolint:errcheck // the body was read; a close error changes nothing
	buf.b, err = readAll(buf.b[:0], resp.Body, m.cfg.maxBody)
	if err != nil {
		return nil, 0, pipeline.Transient(fmt.Errorf("oip: model %s: reading the answer: %w", m.name, err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, classify(m.name, resp.StatusCode, message(buf.b))
	}
	jsonLen := -1
	if h := resp.Header.Get(binaryHeader); h != "" {
		if jsonLen, err = strconv.Atoi(h); err != nil || jsonLen < 0 {
			return nil, 0, fmt.Errorf("oip: model %s: %s %q is not a length", m.name, binaryHeader, h)
		}
	}
	return buf.b, jsonLen, nil
}

// readAll reads r into b, up to max bytes.
func readAll(b []byte, r io.Reader, max int64) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			return b, fmt.Errorf("answer larger than %d bytes", max)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// split gives each request of g its rows of every output.
func (m *Model) split(res []output, g *group, outs [][]schemas.Tensor) error {
	if len(g.items) == 1 {
		ts := make([]schemas.Tensor, len(res))
		for k := range res {
			ts[k] = res[k].t
		}
		outs[g.items[0]] = ts
		return nil
	}
	for k := range res {
		o := &res[k].t
		if len(o.Shape) == 0 || o.Shape[0] != g.rows {
			return fmt.Errorf("oip: model %s: output %q has shape %v: cannot split it by the %d rows of %d requests",
				m.name, o.Name, o.Shape, g.rows, len(g.items))
		}
	}
	// One allocation for every request's tensors and one for their shapes,
	// not two per request.
	all := make([]schemas.Tensor, len(g.items)*len(res))
	dims := 0
	for k := range res {
		dims += len(res[k].t.Shape)
	}
	shapes := make([]int64, 0, dims*len(g.items))
	for n, i := range g.items {
		outs[i] = all[n*len(res) : (n+1)*len(res) : (n+1)*len(res)]
	}
	for k := range res {
		o := &res[k].t
		per := int64(1)
		for _, d := range o.Shape[1:] {
			per *= d
		}
		size := int64(elemSize[o.Datatype])
		var row int64
		for n, i := range g.items {
			rows := g.rowsOf[n]
			lo, hi := row*per, (row+rows)*per
			row += rows
			at := len(shapes)
			shapes = append(append(shapes, rows), o.Shape[1:]...)
			t := schemas.Tensor{Name: o.Name, Datatype: o.Datatype, Shape: shapes[at:len(shapes):len(shapes)]}
			switch {
			case o.Raw != nil:
				t.Raw = o.Raw[lo*size : hi*size : hi*size]
			case o.FP32 != nil:
				t.FP32 = o.FP32[lo:hi:hi]
			case o.FP64 != nil:
				t.FP64 = o.FP64[lo:hi:hi]
			case o.Int32 != nil:
				t.Int32 = o.Int32[lo:hi:hi]
			case o.Int64 != nil:
				t.Int64 = o.Int64[lo:hi:hi]
			case o.Bool != nil:
				t.Bool = o.Bool[lo:hi:hi]
			case o.Bytes != nil:
				t.Bytes = o.Bytes[lo:hi:hi]
			}
			outs[i][k] = t
		}
	}
	return nil
}

// Ready asks the server whether the model is ready
// (GET /v2/models/{name}[/versions/{v}]/ready): nil when it answers 200, a
// transient error otherwise. It is the circuit breaker's probe.
func (m *Model) Ready(ctx context.Context) error {
	if _, err := m.get(ctx, m.url(m.cfg.version, "/ready")); err != nil {
		return pipeline.Transient(fmt.Errorf("oip: model %s: not ready: %w", m.name, err))
	}
	return nil
}

// get fetches u; its errors do not name the model (the callers do).
func (m *Model) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if m.cfg.header != "" {
		req.Header.Set(m.cfg.header, m.cfg.value)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck // the body was read; a close error changes nothing
	body, err := readAll(nil, resp.Body, 16<<20)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), message(body))
	}
	return body, nil
}

// Metadata is the model's metadata as the server describes it.
type Metadata struct {
	Name     string   `json:"name"`
	Versions []string `json:"versions"`
	Platform string   `json:"platform"`
	Inputs   []Input  `json:"inputs"`
	Outputs  []Input  `json:"outputs"`
}

// Check is the start-up check: the model is ready, and its metadata
// (GET /v2/models/{name}[/versions/{v}]) declares every expected input
// with its datatype and a compatible shape. Its error names the server,
// the model and the mismatch.
func (m *Model) Check(ctx context.Context) error {
	where := fmt.Sprintf("oip: model %s at %s", m.name, m.base)
	if _, err := m.get(ctx, m.url(m.cfg.version, "/ready")); err != nil {
		return fmt.Errorf("%s: not ready: %w", where, err)
	}
	body, err := m.get(ctx, m.url(m.cfg.version, ""))
	if err != nil {
		return fmt.Errorf("%s: metadata: %w", where, err)
	}
	var md Metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return fmt.Errorf("%s: metadata: %w", where, err)
	}
	return md.check(where, m.cfg.inputs)
}

func (md *Metadata) check(where string, want []Input) error {
	var errs []error
	for _, w := range want {
		i := slices.IndexFunc(md.Inputs, func(in Input) bool { return in.Name == w.Name })
		if i < 0 {
			names := make([]string, len(md.Inputs))
			for k, in := range md.Inputs {
				names[k] = in.Name
			}
			errs = append(errs, fmt.Errorf("input %q: the server's metadata has no such input (it has %q)", w.Name, names))
			continue
		}
		got := md.Inputs[i]
		if w.Datatype != "" && got.Datatype != w.Datatype {
			errs = append(errs, fmt.Errorf("input %q: configured datatype %s, the server's metadata says %s", w.Name, w.Datatype, got.Datatype))
		}
		if w.Shape != nil && !shapesMatch(w.Shape, got.Shape) {
			errs = append(errs, fmt.Errorf("input %q: configured shape %v, the server's metadata says %v", w.Name, w.Shape, got.Shape))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// shapesMatch: the same rank, and each dimension equal or -1 on either side.
func shapesMatch(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && a[i] != -1 && b[i] != -1 {
			return false
		}
	}
	return true
}
