package topics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Spec is how one topic of the pipeline is created.
type Spec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// Layout is how a deployment creates the graph's topics.
type Layout struct {
	Partitions int32         // of every topic (a changelog has its input's by construction)
	Retention  time.Duration // data topics; 0: the broker's default
	// MaxMessageBytes of the data topics and changelogs; the dead letters get
	// DLQMaxMessageBytes (0: twice as much), so a dead letter wrapping a
	// record at the limit still fits. 0: broker default.
	MaxMessageBytes    int
	DLQMaxMessageBytes int
	// StateRetention of the changelogs, which are compact,delete: the state
	// window is shorter, so older entries only cost space. 0: 7 days.
	StateRetention time.Duration
}

func ptr(s string) *string { return &s }

// The pressure topic's retention and segment roll: its publishers refresh
// every key at least every few seconds, so an hour keeps every live key and
// lets the keys of processes gone for good (an instance id never seen again)
// age out.
const (
	SignalRetention = time.Hour
	SignalSegment   = 10 * time.Minute
)

// Specs lists the topics to create, derived from the graph: every topic a
// stage reads or writes, and nothing else.
func (g Graph) Specs(l Layout) []Spec {
	data := map[string]*string{}
	if l.Retention > 0 {
		data["retention.ms"] = ptr(strconv.FormatInt(l.Retention.Milliseconds(), 10))
	}
	if l.MaxMessageBytes > 0 {
		data["max.message.bytes"] = ptr(strconv.Itoa(l.MaxMessageBytes))
	}
	dlq := map[string]*string{}
	for k, v := range data {
		dlq[k] = v
	}
	if l.DLQMaxMessageBytes > 0 {
		dlq["max.message.bytes"] = ptr(strconv.Itoa(l.DLQMaxMessageBytes))
	} else if l.MaxMessageBytes > 0 {
		dlq["max.message.bytes"] = ptr(strconv.Itoa(2 * l.MaxMessageBytes))
	}
	sr := l.StateRetention
	if sr <= 0 {
		sr = 7 * 24 * time.Hour
	}
	state := map[string]*string{
		"cleanup.policy": ptr("compact,delete"),
		"retention.ms":   ptr(strconv.FormatInt(sr.Milliseconds(), 10)),
	}
	if l.MaxMessageBytes > 0 {
		state["max.message.bytes"] = ptr(strconv.Itoa(l.MaxMessageBytes))
	}
	// A signal is small and only its latest records count: one partition
	// (readers follow it whole), compacted, and segments rolled often
	// enough for compaction and retention to bound it.
	signal := map[string]*string{
		"cleanup.policy": ptr("compact,delete"),
		"retention.ms":   ptr(strconv.FormatInt(SignalRetention.Milliseconds(), 10)),
		"segment.ms":     ptr(strconv.FormatInt(SignalSegment.Milliseconds(), 10)),
	}
	var specs []Spec
	for _, t := range g.TopicRoles() {
		switch t.Role {
		case RoleSignal:
			specs = append(specs, Spec{t.Name, 1, signal})
		case RoleChangelog:
			specs = append(specs, Spec{t.Name, l.Partitions, state})
		case RoleDeadLetter:
			specs = append(specs, Spec{t.Name, l.Partitions, dlq})
		default:
			specs = append(specs, Spec{t.Name, l.Partitions, data})
		}
	}
	return specs
}

// CreateTopics creates the graph's topics; topics that exist already are
// left as they are.
func CreateTopics(ctx context.Context, adm *kadm.Client, g Graph, l Layout, replication int16) error {
	specs := g.Specs(l)
	var errs []error
	for _, s := range specs {
		resp, err := adm.CreateTopic(ctx, s.Partitions, replication, s.Configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create %s: %w", s.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	names := make([]string, 0, len(specs))
	for _, s := range specs {
		names = append(names, s.Name)
	}
	return WaitTopics(ctx, adm, names...)
}

// WaitTopics waits until the cluster's metadata shows every topic with its
// partitions: a broker acknowledges CreateTopics before every broker (and
// so every client) sees the topic, and a stage or check started at once would
// find it missing.
func WaitTopics(ctx context.Context, adm *kadm.Client, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		td, err := adm.ListTopics(ctx, names...)
		missing := ""
		if err == nil {
			for _, n := range names {
				if d, ok := td[n]; !ok || d.Err != nil || len(d.Partitions) == 0 {
					missing = n
					break
				}
			}
			if missing == "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s not in the metadata", missing)
			}
			return fmt.Errorf("topics: waiting for created topics: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TopicCheck is what CheckTopics found about one topic.
type TopicCheck struct {
	Topic      string
	Partitions int32 // -1: missing
	Configs    map[string]string
	// Problems make the pipeline unsafe or unable to run: a missing topic,
	// co-partitioning broken, compaction lost, a size limit below the
	// configured one. Stages refuse to start with any.
	Problems []string
	// Advisories differ from the layout without harm to correctness (a
	// partition count other than topics.partitions).
	Advisories []string
}

// CheckTopics compares the cluster's topics with the layout: existence,
// partition counts (and the co-partitioning the stages rely on: requests with
// dedup-state, outcomes with emitted-ids), compaction of the changelogs, and
// max.message.bytes of dlq against the data topics.
func CheckTopics(ctx context.Context, adm *kadm.Client, g Graph, l Layout) ([]TopicCheck, error) {
	specs := g.Specs(l)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var existing []string
	for _, n := range names {
		if d, ok := details[n]; ok && d.Err == nil {
			existing = append(existing, n)
		}
	}
	configs := map[string]map[string]string{}
	if len(existing) > 0 {
		rcs, err := adm.DescribeTopicConfigs(ctx, existing...)
		if err != nil {
			return nil, fmt.Errorf("describe topic configs: %w", err)
		}
		for _, rc := range rcs {
			if rc.Err != nil {
				return nil, fmt.Errorf("describe configs of %s: %w", rc.Name, rc.Err)
			}
			m := map[string]string{}
			for _, c := range rc.Configs {
				if c.Value != nil {
					m[c.Key] = *c.Value
				}
			}
			configs[rc.Name] = m
		}
	}
	out := make([]TopicCheck, len(specs))
	parts := map[string]int32{}
	for i, s := range specs {
		c := TopicCheck{Topic: s.Name, Partitions: -1, Configs: configs[s.Name]}
		d, ok := details[s.Name]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			c.Problems = append(c.Problems, "missing (asyncinfer topics create makes it)")
		case d.Err != nil:
			c.Problems = append(c.Problems, d.Err.Error())
		default:
			c.Partitions = int32(len(d.Partitions))
			parts[s.Name] = c.Partitions
			if s.Partitions != c.Partitions {
				c.Advisories = append(c.Advisories, fmt.Sprintf("%d partitions, the layout says %d", c.Partitions, s.Partitions))
			}
			for k, want := range s.Configs {
				switch k {
				case "cleanup.policy":
					if !sameSet(c.Configs[k], *want) {
						c.Problems = append(c.Problems, fmt.Sprintf("cleanup.policy=%s, want %s (the topic would grow without bound or lose its latest records)", c.Configs[k], *want))
					}
				case "max.message.bytes":
					// Every limit of the path derives from the configured
					// one: a topic that takes less would refuse records
					// the stages think fit.
					have, _ := strconv.Atoi(c.Configs[k])
					if w, _ := strconv.Atoi(*want); have > 0 && have < w {
						c.Problems = append(c.Problems, fmt.Sprintf("max.message.bytes=%d is below the configured %d (topics.max_message_bytes or topics.dlq_max_message_bytes): set the topic's limit, or configure the lower one", have, w))
					}
				}
			}
		}
		out[i] = c
	}
	t := g.Topics
	for _, cp := range g.CoPartitioned() {
		pa, oka := parts[cp.Input]
		pb, okb := parts[cp.Changelog]
		if oka && okb && pa != pb {
			for i := range out {
				if out[i].Topic == cp.Changelog {
					out[i].Problems = append(out[i].Problems, fmt.Sprintf("%d partitions but %s has %d: %s", pb, cp.Input, pa, cp.Why))
				}
			}
		}
	}
	dataMax, _ := strconv.Atoi(configs[t.Outcomes]["max.message.bytes"])
	dlqMax, _ := strconv.Atoi(configs[t.DLQ]["max.message.bytes"])
	if dataMax > 0 && dlqMax > 0 && dlqMax < dataMax {
		for i := range out {
			if out[i].Topic == t.DLQ {
				out[i].Problems = append(out[i].Problems, fmt.Sprintf("max.message.bytes=%d is below %s's %d: a dead letter carries its source record", dlqMax, t.Outcomes, dataMax))
			}
		}
	}
	return out, nil
}

// sameSet compares comma-separated lists as sets.
func sameSet(a, b string) bool {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				m[p] = true
			}
		}
		return m
	}
	x, y := set(a), set(b)
	if len(x) != len(y) {
		return false
	}
	for k := range x {
		if !y[k] {
			return false
		}
	}
	return true
}
