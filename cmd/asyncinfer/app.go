package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
)

// parseCost parses "a,c" durations; bare numbers are milliseconds.
func parseCost(s string) (a, c time.Duration, err error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("--model-cost %q: want a,c (e.g. 5ms,0.25ms)", s)
	}
	d := make([]time.Duration, 2)
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if v, perr := strconv.ParseFloat(p, 64); perr == nil {
			d[i] = time.Duration(v * float64(time.Millisecond))
		} else if d[i], err = time.ParseDuration(p); err != nil {
			return 0, 0, fmt.Errorf("--model-cost %q: %w", s, err)
		}
		if d[i] < 0 {
			return 0, 0, fmt.Errorf("--model-cost %q: negative cost", s)
		}
	}
	return d[0], d[1], nil
}

// parseOutage parses D@T.
func parseOutage(s string) ([]sim.Outage, error) {
	o, err := config.ParseOutage(s)
	if err != nil || o == nil {
		if err != nil {
			err = fmt.Errorf("--model-outage %w", err)
		}
		return nil, err
	}
	return []sim.Outage{{Start: o.Start, Duration: o.Duration}}, nil
}
