package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Stage names a process may run.
var stageNames = []string{"dedup", "infer", "emit"}

// Validate checks the configuration; every error names the field's path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	for _, b := range c.Kafka.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad("kafka.brokers", "%q is not host:port", b)
		}
	}
	c.Kafka.TLS.validate("kafka.tls", bad)
	c.Registry.TLS.validate("registry.tls", bad)
	s := c.Kafka.SASL
	switch strings.ToUpper(s.Mechanism) {
	case "":
		if s.Username != "" || s.Password != "" || s.Token != "" || s.TokenFile != "" {
			bad("kafka.sasl.mechanism", "credentials are set but no mechanism (want PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if s.Username == "" || s.Password == "" {
			bad("kafka.sasl", "%s needs username and password", s.Mechanism)
		}
	case "OAUTHBEARER":
		if (s.Token == "") == (s.TokenFile == "") {
			bad("kafka.sasl", "OAUTHBEARER needs exactly one of token and token_file")
		}
	default:
		bad("kafka.sasl.mechanism", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER", s.Mechanism)
	}
	if len(c.Kafka.Brokers) > 0 && c.Registry.URL == "" {
		bad("registry.url", "required with kafka.brokers: messages are Avro with schema ids from a registry")
	}
	if c.Registry.URL != "" {
		if u, err := url.Parse(c.Registry.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("registry.url", "%q is not an http(s) URL", c.Registry.URL)
		}
	}
	if c.Registry.BearerToken != "" && (c.Registry.Username != "" || c.Registry.Password != "") {
		bad("registry", "set basic auth (username, password) or bearer_token, not both")
	}
	if (c.Registry.Username == "") != (c.Registry.Password == "") {
		bad("registry", "basic auth needs both username and password")
	}
	t := c.Topics
	if t.Prefix == "" {
		bad("topics.prefix", "empty (topics would collide with everything else on the cluster)")
	}
	if t.Partitions < 1 {
		bad("topics.partitions", "%d: want at least 1", t.Partitions)
	}
	if t.ReplicationFactor == 0 || t.ReplicationFactor < -1 {
		bad("topics.replication_factor", "%d: want -1 (broker default) or at least 1", t.ReplicationFactor)
	}
	if t.Retention < 0 {
		bad("topics.retention", "negative")
	}
	if t.MaxMessageBytes < 1024 {
		bad("topics.max_message_bytes", "%d: want at least 1024", t.MaxMessageBytes)
	}
	if t.DLQMaxMessageBytes < t.MaxMessageBytes {
		bad("topics.dlq_max_message_bytes", "%d is below topics.max_message_bytes %d: a dead letter carries its source record", t.DLQMaxMessageBytes, t.MaxMessageBytes)
	}
	if len(c.Stages) == 0 {
		bad("stages", "no stage given (want some of %s)", strings.Join(stageNames, ", "))
	}
	for _, st := range c.Stages {
		if !slices.Contains(stageNames, st) {
			bad("stages", "unknown stage %q (want some of %s)", st, strings.Join(stageNames, ", "))
		}
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			bad("admin_addr", "%q is not host:port (:0 picks a free port)", c.AdminAddr)
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Runner.MaxInflight < 1 {
		bad("runner.max_inflight", "%d: want at least 1", c.Runner.MaxInflight)
	}
	if c.Runner.MaxInflightBytes < 0 {
		bad("runner.max_inflight_bytes", "%d: negative", c.Runner.MaxInflightBytes)
	}
	if c.Runner.TransactionTimeout <= 0 {
		bad("runner.transaction_timeout", "want a positive duration")
	}
	if c.Runner.ProducerLinger < 0 {
		bad("runner.producer_linger", "negative")
	}
	if c.Dedup.Window <= 0 {
		bad("dedup.window", "want a positive duration")
	}
	if c.Emit.Window <= 0 {
		bad("emit.window", "want a positive duration")
	}
	for _, r := range c.Emit.ReplyTopics {
		if strings.HasPrefix(r, t.Prefix) && r != t.Prefix+"results" {
			bad("emit.reply_topics", "%q starts with the pipeline's prefix %q: reply topics may not be internal topics", r, t.Prefix)
		}
	}
	if err := topics.ValidateLanes(c.TopicLanes()); err != nil {
		bad("lanes", "%v", err)
	}
	for i, l := range c.Lanes {
		if l.WaitFraction < 0 || l.WaitFraction > 1 || l.WaitFraction != l.WaitFraction {
			bad(fmt.Sprintf("lanes[%d].wait_fraction", i), "%v: want a fraction in (0, 1] (0: 1)", l.WaitFraction)
		}
	}
	names := map[string]bool{}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			bad(p+".name", "required")
		} else if names[m.Name] {
			bad(p+".name", "%q configured twice", m.Name)
		}
		names[m.Name] = true
		m.validate(p, bad)
	}
	return errors.Join(errs...)
}

func (m Model) validate(p string, bad func(path, format string, a ...any)) {
	switch m.Backend {
	case "", "sim":
		if o := m.OIP; len(o.Inputs) > 0 || !reflect.ValueOf(OIP{URL: o.URL, ModelName: o.ModelName, Version: o.Version,
			MaxConnections: o.MaxConnections, BinaryData: o.BinaryData, Auth: o.Auth, TLS: o.TLS}).IsZero() {
			bad(p+".oip", "set but backend is sim (want backend: oip)")
		}
	case "oip":
		if m.Sim != (Sim{}) {
			bad(p+".sim", "set but backend is oip")
		}
		m.OIP.validate(p+".oip", bad)
	default:
		bad(p+".backend", "%q: want sim or oip", m.Backend)
	}
	nonNeg := func(name string, v int) {
		if v < 0 {
			bad(p+"."+name, "%d: negative", v)
		}
	}
	nonNeg("max_batch_items", m.MaxBatchItems)
	nonNeg("max_batch_bytes", m.MaxBatchBytes)
	nonNeg("concurrency", m.Concurrency)
	nonNeg("max_attempts", m.MaxAttempts)
	nonNeg("breaker_threshold", m.BreakerThreshold)
	for name, d := range map[string]time.Duration{"max_wait": m.MaxWait, "timeout": m.Timeout,
		"latency_objective": m.LatencyObjective, "breaker_cooldown": m.BreakerCooldown, "downstream_latency": m.DownstreamLatency,
		"sim.fixed": m.Sim.Fixed, "sim.per_item": m.Sim.PerItem} {
		if d < 0 {
			bad(p+"."+name, "negative")
		}
	}
	if m.LatencyObjective > 0 && m.MaxWait >= m.LatencyObjective {
		bad(p+".max_wait", "%v is not below latency_objective %v: every waiting batch would miss it", m.MaxWait, m.LatencyObjective)
	}
	switch infer.Batching(m.Batching) {
	case infer.BatchingAuto, infer.BatchingWindow:
	case infer.BatchingAdaptive:
		switch {
		case m.LatencyObjective <= 0:
			bad(p+".batching", "adaptive needs a latency_objective: it batches to meet it")
		case m.MaxWait > 0:
			bad(p+".max_wait", "%v with batching adaptive: max_wait is the window's; adaptive decides its waits itself", m.MaxWait)
		}
	default:
		bad(p+".batching", "%q: want adaptive or window (or nothing: adaptive with a latency_objective, else window)", m.Batching)
	}
	if d := ModelDefaults(m); d.Batching == string(infer.BatchingAdaptive) && d.DownstreamLatency >= m.LatencyObjective && m.LatencyObjective > 0 {
		bad(p+".downstream_latency", "%v is not below latency_objective %v: no request could make it", d.DownstreamLatency, m.LatencyObjective)
	}
	switch m.Admission {
	case "", "reject", "pause", "off":
	default:
		bad(p+".admission", "%q: want reject, pause or off (or nothing: reject with a latency_objective, else off)", m.Admission)
	}
	if m.PauseAbove < 0 {
		bad(p+".pause_above", "negative")
	} else if m.PauseAbove > 0 && m.Admission != "pause" {
		bad(p+".pause_above", "set but admission is not pause")
	}
	if m.Sim.ErrorRate < 0 || m.Sim.ErrorRate > 1 || m.Sim.ErrorRate != m.Sim.ErrorRate {
		bad(p+".sim.error_rate", "%v: want a fraction in [0, 1]", m.Sim.ErrorRate)
	}
	if _, err := ParseOutage(m.Sim.Outage); err != nil {
		bad(p+".sim.outage", "%v", err)
	}
}

// oipDatatypes are the Open Inference Protocol's tensor datatypes.
var oipDatatypes = []string{"BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES"}

func (o OIP) validate(p string, bad func(path, format string, a ...any)) {
	u, err := url.Parse(o.URL)
	switch {
	case o.URL == "":
		bad(p+".url", "required with backend oip")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		bad(p+".url", "%q is not an http(s)://host[:port][/prefix] URL", o.URL)
	case o.TLS.Enabled && u.Scheme != "https":
		bad(p+".tls.enabled", "TLS is enabled but url %q is not https", o.URL)
	}
	if o.MaxConnections < 0 {
		bad(p+".max_connections", "%d: negative", o.MaxConnections)
	}
	a := o.Auth
	switch {
	case a.BearerToken != "" && (a.Header != "" || a.HeaderValue != ""):
		bad(p+".auth", "set bearer_token or header and header_value, not both")
	case (a.Header == "") != (a.HeaderValue == ""):
		bad(p+".auth", "header and header_value go together")
	case strings.ContainsAny(a.Header, " :\t\r\n"):
		bad(p+".auth.header", "%q is not a header name", a.Header)
	case strings.ContainsAny(a.HeaderValue+a.BearerToken, "\r\n"):
		bad(p+".auth", "a line break in a header value")
	}
	o.TLS.validate(p+".tls", bad)
	seen := map[string]bool{}
	for i, in := range o.Inputs {
		ip := fmt.Sprintf("%s.inputs[%d]", p, i)
		if in.Name == "" {
			bad(ip+".name", "required")
		} else if seen[in.Name] {
			bad(ip+".name", "%q given twice", in.Name)
		}
		seen[in.Name] = true
		if in.Datatype != "" && !slices.Contains(oipDatatypes, in.Datatype) {
			bad(ip+".datatype", "%q: want one of %s", in.Datatype, strings.Join(oipDatatypes, ", "))
		}
		for _, d := range in.Shape {
			if d < -1 {
				bad(ip+".shape", "%v: dimensions are sizes, or -1 for any", in.Shape)
				break
			}
		}
	}
}

func (t TLS) validate(p string, bad func(path, format string, a ...any)) {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify {
			bad(p+".enabled", "TLS files or options are set but enabled is false")
		}
		return
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad(p, "cert_file and key_file go together (mutual TLS)")
	}
}

// Outage is a model outage window, relative to the start.
type Outage struct{ Start, Duration time.Duration }

// ParseOutage parses D@T ("" is none).
func ParseOutage(s string) (*Outage, error) {
	if s == "" {
		return nil, nil
	}
	d, t, ok := strings.Cut(s, "@")
	if !ok {
		return nil, fmt.Errorf("%q: want D@T (e.g. 2s@5s)", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	at, err := time.ParseDuration(t)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	return &Outage{Start: at, Duration: dur}, nil
}
