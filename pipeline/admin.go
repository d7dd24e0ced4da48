package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TopicSpec is how one topic of the pipeline is created.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// TopicLayout describes the topics of a deployment.
type TopicLayout struct {
	Topics     Topics
	Partitions int32         // every topic but dlq and model-stats; requests and dedup-state must match
	Retention  time.Duration // data topics; 0: the broker's default
	// MaxMessageBytes of the data topics; dlq gets twice as much, so a dead
	// letter wrapping a record at the limit still fits. 0: broker default.
	MaxMessageBytes int
	// StateRetention of the changelogs, which are compact,delete: the state
	// window is shorter, so older entries only cost space. 0: 7 days.
	StateRetention time.Duration
}

func ptr(s string) *string { return &s }

// Specs lists the topics to create.
func (l TopicLayout) Specs() []TopicSpec {
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
	if l.MaxMessageBytes > 0 {
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
	stats := map[string]*string{"cleanup.policy": ptr("compact")}
	t := l.Topics
	return []TopicSpec{
		{t.Requests, l.Partitions, data},
		{t.Accepted, l.Partitions, data},
		{t.Outcomes, l.Partitions, data},
		{t.Results, l.Partitions, data},
		{t.DLQ, l.Partitions, dlq},
		{t.DedupState, l.Partitions, state},
		{t.EmittedIDs, l.Partitions, state},
		{t.ModelStats, 1, stats},
	}
}

// CreateTopics creates the layout's topics; topics that exist already are
// left as they are.
func CreateTopics(ctx context.Context, adm *kadm.Client, l TopicLayout, replication int16) error {
	var errs []error
	for _, s := range l.Specs() {
		resp, err := adm.CreateTopic(ctx, s.Partitions, replication, s.Configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create %s: %w", s.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	return nil
}
