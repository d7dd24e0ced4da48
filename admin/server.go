package admin

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source reports the process's state to the server.
//
// Status is called by HTTP handlers, concurrently with itself and with the
// pipeline: it must be safe for concurrent use, return quickly (no Kafka
// round trip: take lag from a Watcher's snapshot), and return values the
// server may keep and encode but never modifies.
type Source interface {
	Status() Status
}

// Status is the state of one process.
type Status struct {
	Instance   string         `json:"instance"`
	Stages     []StageStatus  `json:"stages"`
	Lag        []PartitionLag `json:"lag"`
	LagGroups  []GroupLag     `json:"lag_groups,omitempty"`
	LagUpdated time.Time      `json:"lag_updated,omitzero"`
	LagError   string         `json:"lag_error,omitempty"`
}

// StageStatus is the state of one stage's runner.
type StageStatus struct {
	Name  string `json:"name"`
	Group string `json:"group"`
	// Ready is true while the stage consumes: joined, with every assigned
	// partition restored.
	Ready bool `json:"ready"`
	// Joined is true while the stage is a member of its group.
	Joined     bool              `json:"joined"`
	Partitions []PartitionStatus `json:"partitions"`
	// Inflight counts records handed to the stage and not yet finished.
	Inflight int `json:"inflight"`
	// Waiting says what the stage waits for while some of its partitions
	// cannot be consumed (the schema registry); empty when nothing.
	Waiting string `json:"waiting,omitempty"`
	// Notices are what the stage says an operator should know.
	Notices []string `json:"notices,omitempty"`
}

// PartitionStatus is one assigned partition of a stage.
type PartitionStatus struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Restoring is true while the partition's state is read back from its
	// changelog.
	Restoring bool `json:"restoring"`
	// PausedBy lists the reasons holding the partition paused, empty when
	// it is fetched.
	PausedBy []string `json:"paused_by,omitempty"`
}

// shutdownTimeout bounds the graceful shutdown: scrapes and status requests
// are short, so whatever is still running after it is stuck.
const shutdownTimeout = 5 * time.Second

//go:embed status.html
var statusPage []byte

// Server is the admin HTTP server.
type Server struct {
	ln  net.Listener
	srv *http.Server
	g   prometheus.Gatherer
	src Source
	// pprof serves /debug/pprof/ (WithPprof).
	pprof bool
}

// ServerOption configures a Server.
type ServerOption interface{ apply(*Server) }

type serverOptFn func(*Server)

func (f serverOptFn) apply(s *Server) { f(s) }

// WithPprof serves Go's profiles under /debug/pprof/ (CPU, heap,
// goroutines, ...), so that anyone can profile a running stage. Default: off
// (profiles show internals, and taking one costs CPU).
func WithPprof() ServerOption { return serverOptFn(func(s *Server) { s.pprof = true }) }

// New listens on addr at once (port 0 picks a free port, see Addr) and
// returns the server; requests are answered once Serve runs. g is what
// /metrics exposes and /status.json summarizes; src gives the rest of
// /status.json and /readyz.
func New(addr string, g prometheus.Gatherer, src Source, opts ...ServerOption) (*Server, error) {
	if g == nil || src == nil {
		return nil, errors.New("admin: server needs a gatherer and a source")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen: %w", err)
	}
	s := &Server{ln: ln, g: g, src: src}
	for _, o := range opts {
		o.apply(s)
	}
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the address the server listens on, as host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler serves the admin endpoints; Serve uses it, tests may too.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status.json", s.statusJSON)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(statusPage)
	})
	if s.pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Serve answers requests until ctx ends, then shuts down gracefully (up to
// 5s for requests in progress) and returns nil; it returns an error if the
// server fails or was closed.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// Close stops the server at once, dropping requests in progress; for a
// server whose Serve never ran (Serve does its own graceful shutdown).
func (s *Server) Close() error {
	err := s.srv.Close()
	if lerr := s.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) {
		err = errors.Join(err, lerr)
	}
	return err
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.src.Status()
	if len(st.Stages) == 0 {
		plain(w, http.StatusServiceUnavailable, "no stages\n")
		return
	}
	var b strings.Builder
	for _, stage := range st.Stages {
		if !stage.Ready {
			fmt.Fprintf(&b, "stage %s: %s\n", stage.Name, notReadyReason(stage))
		}
	}
	if b.Len() > 0 {
		plain(w, http.StatusServiceUnavailable, b.String())
		return
	}
	plain(w, http.StatusOK, "ready\n")
}

// notReadyReason says why a stage that is not ready is not: a runner is
// ready once joined with its partitions restored, so a joined runner with
// nothing left to restore that is still not ready has stopped.
func notReadyReason(st StageStatus) string {
	if !st.Joined {
		return "not joined"
	}
	var restoring []string
	for _, p := range st.Partitions {
		if p.Restoring {
			restoring = append(restoring, fmt.Sprintf("%s/%d", p.Topic, p.Partition))
		}
	}
	if len(restoring) > 0 {
		return "restoring partitions " + strings.Join(restoring, ", ")
	}
	if st.Waiting != "" {
		return "waiting: " + st.Waiting
	}
	return "stopped"
}

// statusDoc is the body of /status.json.
type statusDoc struct {
	Status
	// NotReady says why, for each stage that is not ready, as /readyz does.
	NotReady     map[string]string `json:"not_ready,omitempty"`
	Metrics      Figures           `json:"metrics"`
	MetricsError string            `json:"metrics_error,omitempty"`
	Time         time.Time         `json:"time"`
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	doc := statusDoc{Status: s.src.Status(), Time: time.Now()}
	for _, st := range doc.Stages {
		if !st.Ready {
			if doc.NotReady == nil {
				doc.NotReady = map[string]string{}
			}
			doc.NotReady[st.Name] = notReadyReason(st)
		}
	}
	mfs, err := s.g.Gather()
	if err != nil {
		// Gather returns what it could alongside the error: show both.
		doc.MetricsError = err.Error()
	}
	doc.Metrics = figures(mfs)
	body, err := json.Marshal(doc)
	if err != nil {
		http.Error(w, "admin: encode status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
