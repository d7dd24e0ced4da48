// Package schemas owns the messages asyncinfer exchanges over Kafka: the Avro
// schemas (embedded .avsc files, frozen), their Go types, and the Confluent
// wire format codec that registers and resolves them through a schema
// registry. It imports nothing else from this module.
package schemas

// Status is the terminal status of a request.
type Status string

// The terminal statuses. Every request id gets one of these.
const (
	StatusSucceeded Status = "SUCCEEDED"
	StatusFailed    Status = "FAILED"
	StatusExpired   Status = "EXPIRED"
	StatusRejected  Status = "REJECTED"
	StatusDuplicate Status = "DUPLICATE"
)

// Tensor is a named, typed tensor in the spirit of the Open Inference
// Protocol v2: a datatype ("FP32", "FP64", "INT32", "INT64", "BOOL",
// "BYTES", and the protocol's others, "INT8", "INT16", "UINT8" to "UINT64",
// "FP16", which have no typed field and travel in Raw only), a shape, and
// the data either in the typed field that matches the datatype or, for
// speed, as Raw little-endian bytes (row-major). Exactly one of the data
// fields is set.
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	FP32     []float32
	FP64     []float64
	Int32    []int32
	Int64    []int64
	Bool     []bool
	Bytes    [][]byte
	Raw      []byte
}

// Request is an inference request as clients produce it.
type Request struct {
	RequestID      string
	IdempotencyKey string // empty: the request id is the key
	Tenant         string
	Model          string
	ModelVersion   string // empty: any version
	Inputs         []Tensor
	// Parameters holds string, int64, float64 or bool values.
	Parameters  map[string]any
	Priority    int32
	DeadlineMs  int64 // absolute, ms since the Unix epoch; 0: none
	ReplyTopic  string
	CreatedAtMs int64
}

// Key is the request's idempotency key: its IdempotencyKey, or its
// RequestID when none is given. Requests are partitioned by it.
func (r *Request) Key() string {
	if r.IdempotencyKey != "" {
		return r.IdempotencyKey
	}
	return r.RequestID
}

// Timings are the durations a request spent in each part of the pipeline,
// in milliseconds.
type Timings struct {
	QueuedMs    float64
	BatchWaitMs float64
	InferenceMs float64
	EndToEndMs  float64
}

// Result is the terminal answer for one request id. The same type travels on
// the internal outcomes topic and on the results and reply topics.
type Result struct {
	RequestID         string
	IdempotencyKey    string
	Tenant            string
	Status            Status
	Reason            string
	ErrorCode         string
	ErrorMessage      string
	RetryAfterMs      int64
	OriginalRequestID string
	OriginalStatus    Status // empty: unknown
	Attempt           int32
	Outputs           []Tensor
	Model             string
	ModelVersion      string
	BatchSize         int32
	Timings           Timings
	ReplyTopic        string
	CreatedAtMs       int64
	CompletedAtMs     int64
}

// DeadLetter records input that could not be answered in the normal way: bytes
// that do not decode (nothing else is produced for them), or a copy of a
// FAILED request for operators (Answered is then true and it is not a
// terminal answer).
type DeadLetter struct {
	Reason          string
	Error           string
	Stage           string
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	RequestID       string // empty when not decodable
	Answered        bool
	Payload         []byte // the source value, or a prefix of it when Truncated
	PayloadSize     int64
	PayloadSHA256   []byte
	Truncated       bool
	AtMs            int64
}

// StateEntry is one record of a stage's changelog (dedup-state,
// emitted-ids): the key seen, the request id that claimed it, and when the
// entry stops counting.
type StateEntry struct {
	Key         string
	RequestID   string
	Status      Status // empty: not known to this stage
	ExpiresAtMs int64
	// More are further entries written in the same changelog record, in
	// order (their own More is nil): the runtime writes the entries of the
	// works it settles together as one record.
	More []StateEntry
}

// Pressure is one record of the pressure topic: the pressure on one model's
// priority lane, as the pipeline's admission sees it (Source
// PressureAdmission: the verdict clients read) or as one infer process
// serves it (PressureServing: its capacity and backlog). See pressure.avsc
// for each field.
type Pressure struct {
	Source            string
	Model             string
	Lane              string
	MinPriority       int32
	Instance          string
	Status            string
	AtMs              int64
	IntervalMs        int64
	PredictedWaitMs   int64
	RetryAfterMs      int64
	ShedFraction      float64
	CapacityPerSecond float64
	Backlog           int64
	Running           int64
	FixedMs           float64
	PerItemMs         float64
	Batch             int32
	BatchLimit        int32
	BatchMeasured     int32
}

// The sources of pressure records.
const (
	PressureAdmission = "admission"
	PressureServing   = "serving"
)
