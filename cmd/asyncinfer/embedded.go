package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// embedded is the in-process broker (kfake) and schema registry (srfake),
// used when every stage runs in one process without --brokers.
type embedded struct {
	cluster  *kfake.Cluster
	registry *srfake.Registry
	srv      *http.Server
	url      string
	dataDir  string
}

// registryFile keeps the embedded registry's schemas beside the broker's
// data, so a later process (verify --data-dir) decodes with the same ids.
const registryFile = "asyncinfer-registry.json"

type savedSchema struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Schema  string `json:"schema"`
}

// embeddedConfig says where the embedded broker keeps data and listens.
type embeddedConfig struct {
	dataDir      string
	kafkaPort    int    // 0: a free port
	registryAddr string // "": 127.0.0.1 and a free port
	// persist saves the registry after every registration (dev-broker:
	// other processes register schemas).
	persist bool
}

func startEmbedded(ec embeddedConfig) (*embedded, error) {
	dataDir := ec.dataDir
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if ec.kafkaPort != 0 {
		opts = append(opts, kfake.Ports(ec.kafkaPort))
	}
	if dataDir != "" {
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(filepath.Join(dataDir, "kafka")))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	e := &embedded{cluster: c, registry: srfake.NewRegistry(), dataDir: dataDir}
	if dataDir != "" {
		if err := e.loadRegistry(); err != nil {
			c.Close()
			return nil, err
		}
	}
	addr := ec.registryAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("embedded registry: %w", err)
	}
	h := e.registry.Handler()
	if ec.persist && dataDir != "" {
		h = e.saveAfterWrites(h)
	}
	e.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go e.srv.Serve(ln) //nolint:errcheck // returns on Close
	e.url = "http://" + ln.Addr().String()
	return e, nil
}

// saveAfterWrites saves the registry to the data dir after every request
// that may have changed it, so a restarted dev-broker keeps the schema ids
// the topics' records carry.
func (e *embedded) saveAfterWrites(h http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		defer cancel()
		if err := e.saveRegistry(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "asyncinfer dev-broker: saving the registry:", err)
		}
	})
}

func (e *embedded) brokers() []string { return e.cluster.ListenAddrs() }

func (e *embedded) loadRegistry() error {
	b, err := os.ReadFile(filepath.Join(e.dataDir, registryFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("embedded registry: %w", err)
	}
	var saved []savedSchema
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("embedded registry: %s: %w", registryFile, err)
	}
	// SeedSchema takes each id once; a schema shared by several subjects
	// (requests and requests.accepted) is registered again under the others,
	// which must give the same id back.
	seeded := map[int]bool{}
	for _, s := range saved {
		sch := sr.Schema{Schema: s.Schema, Type: sr.TypeAvro}
		if !seeded[s.ID] {
			e.registry.SeedSchema(s.Subject, s.Version, s.ID, sch)
			seeded[s.ID] = true
			continue
		}
		id, _, err := e.registry.RegisterSchema(s.Subject, sch)
		if err != nil {
			return fmt.Errorf("embedded registry: %s: restoring %s: %w", registryFile, s.Subject, err)
		}
		if id != s.ID {
			return fmt.Errorf("embedded registry: %s: restoring %s gave id %d, want %d", registryFile, s.Subject, id, s.ID)
		}
	}
	return nil
}

// saveRegistry writes every registered schema to the data dir.
func (e *embedded) saveRegistry(ctx context.Context) error {
	if e.dataDir == "" {
		return nil
	}
	cl, err := sr.NewClient(sr.URLs(e.url))
	if err != nil {
		return err
	}
	subjects, err := cl.Subjects(ctx)
	if err != nil {
		return fmt.Errorf("embedded registry: list subjects: %w", err)
	}
	var saved []savedSchema
	for _, s := range subjects {
		all, err := cl.Schemas(ctx, s)
		if err != nil {
			return fmt.Errorf("embedded registry: %s: %w", s, err)
		}
		for _, ss := range all {
			saved = append(saved, savedSchema{Subject: ss.Subject, Version: ss.Version, ID: ss.ID, Schema: ss.Schema.Schema})
		}
	}
	b, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(e.dataDir, registryFile), b, 0o644)
}

func (e *embedded) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e.srv.Shutdown(ctx) //nolint:errcheck // best effort
	e.cluster.Close()
}
