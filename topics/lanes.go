package topics

import (
	"errors"
	"fmt"
	"math"
	"regexp"
)

// Lane is a priority class of requests. Dedup writes each accepted request
// to its lane's topic, infer reads the lanes so that a higher one is always
// served first, and admission sheds lower lanes first. Lanes are ordered
// from the highest: a request belongs to the first lane whose MinPriority
// its priority reaches, and the last lane takes every priority below too.
type Lane struct {
	Name        string
	MinPriority int32
	// Topic is where the lane's accepted requests go: requests.accepted for
	// the lane that takes priority 0, requests.accepted.<name> for the
	// others (set by NewGraph).
	Topic string
}

// DefaultLanes are high (priority > 0), normal (0) and low (< 0).
var DefaultLanes = []Lane{
	{Name: "high", MinPriority: 1},
	{Name: "normal", MinPriority: 0},
	{Name: "low", MinPriority: math.MinInt32},
}

// MaxLanes bounds the lanes of a deployment: each is a topic infer reads.
const MaxLanes = 8

var laneName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ValidateLanes checks lanes: 1 to MaxLanes, names that can end a topic
// name (lowercase letters, digits, _ and -, at most 32), unique, and
// MinPriority strictly decreasing.
func ValidateLanes(lanes []Lane) error {
	var errs []error
	if len(lanes) == 0 || len(lanes) > MaxLanes {
		errs = append(errs, fmt.Errorf("%d lanes: want 1 to %d", len(lanes), MaxLanes))
	}
	seen := map[string]bool{}
	for i, l := range lanes {
		if !laneName.MatchString(l.Name) {
			errs = append(errs, fmt.Errorf("lane %q: a name of lowercase letters, digits, _ and - (at most 32)", l.Name))
		}
		if seen[l.Name] {
			errs = append(errs, fmt.Errorf("lane %q named twice", l.Name))
		}
		seen[l.Name] = true
		if i > 0 && l.MinPriority >= lanes[i-1].MinPriority {
			errs = append(errs, fmt.Errorf("lane %q: min_priority %d is not below lane %q's %d (lanes go from the highest)",
				l.Name, l.MinPriority, lanes[i-1].Name, lanes[i-1].MinPriority))
		}
	}
	return errors.Join(errs...)
}

// LaneOf is the index in lanes (ordered from the highest) of the lane a
// priority belongs to: the first whose MinPriority it reaches, else the
// last.
func LaneOf(lanes []Lane, priority int32) int {
	for i, l := range lanes {
		if priority >= l.MinPriority {
			return i
		}
	}
	return len(lanes) - 1
}
