package pipeline

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrTooLarge is matched (errors.Is) by the error of an Emit whose record
// would not fit the topic's max.message.bytes: the stage answers instead
// (FAILED, REQUEST_TOO_LARGE or RESULT_TOO_LARGE) rather than let the
// produce fail.
var ErrTooLarge = errors.New("pipeline: record larger than the topic's max.message.bytes")

// DownstreamHeadroom is what every record a stage emits leaves free under
// the size limit for the headers later stages add (emit's status header),
// so that what fits here fits all the way to the results.
const DownstreamHeadroom = 512

// batchOverhead is the v2 record batch header: what a broker counts, with
// the records, against max.message.bytes.
const batchOverhead = 61

// BatchSize bounds the size of a record batch holding r alone, as a broker
// measures it against max.message.bytes (varints counted at their widest).
func BatchSize(r *kgo.Record) int {
	n := batchOverhead + 1 /* attributes */ + 5 /* length */ + 10 /* timestamp delta */ + 5 /* offset delta */
	n += 5 + len(r.Key) + 5 + len(r.Value) + 5
	for _, h := range r.Headers {
		n += 5 + len(h.Key) + 5 + len(h.Value)
	}
	return n
}

// fits checks rec against the record size limit, leaving the headroom.
func (r *Runner) fits(rec *kgo.Record) error {
	limit := r.cfg.maxRecordBytes
	if limit <= 0 {
		return nil
	}
	if n := BatchSize(rec) + DownstreamHeadroom; n > limit {
		return fmt.Errorf("%w: %s record of %d bytes (with %d bytes kept for downstream headers), limit %d",
			ErrTooLarge, rec.Topic, n-DownstreamHeadroom, DownstreamHeadroom, limit)
	}
	return nil
}
