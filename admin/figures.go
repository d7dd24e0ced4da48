package admin

import (
	"cmp"
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// The metrics /status.json summarizes. They belong to the stages and the
// runner; docs/metrics.md is their contract, and a test checks these names
// against it.
const (
	metricBatchSize     = "asyncinfer_batch_size"
	metricModelCalls    = "asyncinfer_model_calls_total"
	metricInferOutcomes = "asyncinfer_infer_outcomes_total"
	metricResults       = "asyncinfer_results_emitted_total"
	metricInflight      = "asyncinfer_inflight_records"
	metricCostFixed     = "asyncinfer_model_cost_fixed_seconds"
	metricCostPerItem   = "asyncinfer_model_cost_per_item_seconds"
)

// Figures are the numbers of /status.json taken from the metrics, so that the
// status page needs no Prometheus. A metric the process does not expose
// (a stage it does not run) leaves its figure empty.
type Figures struct {
	// Batches is the batch size per model since start.
	Batches []BatchFigure `json:"batches"`
	// ModelCalls counts model calls by model and result (ok, transient,
	// permanent).
	ModelCalls []Count `json:"model_calls"`
	// InferOutcomes counts the infer stage's outcomes by model and status.
	InferOutcomes []Count `json:"infer_outcomes"`
	// Results counts results emitted, by status.
	Results []Count `json:"results"`
	// Inflight is the runner's in-flight records, by stage.
	Inflight []Count `json:"inflight"`
	// Costs are the models' fitted call costs, t(b) = a + c·b, per model
	// and version, once a call was measured.
	Costs []CostFigure `json:"costs"`
}

// CostFigure is one model version's fitted call cost.
type CostFigure struct {
	Model   string  `json:"model"`
	Version string  `json:"version"`
	Fixed   float64 `json:"fixed_seconds"`    // a
	PerItem float64 `json:"per_item_seconds"` // c
}

// BatchFigure summarizes one model's batch-size histogram.
type BatchFigure struct {
	Model string  `json:"model"`
	Count uint64  `json:"count"` // model calls observed
	Mean  float64 `json:"mean"`  // items per call, 0 before the first
}

// Count is one series of a counter or gauge.
type Count struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

func figures(mfs []*dto.MetricFamily) Figures {
	f := Figures{Batches: []BatchFigure{}, Costs: []CostFigure{}}
	costs := map[[2]string]*CostFigure{}
	cost := func(m *dto.Metric) *CostFigure {
		l := labels(m)
		k := [2]string{l["model"], l["version"]}
		if costs[k] == nil {
			costs[k] = &CostFigure{Model: k[0], Version: k[1]}
		}
		return costs[k]
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricBatchSize:
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				b := BatchFigure{Model: labels(m)["model"], Count: h.GetSampleCount()}
				if b.Count > 0 {
					b.Mean = h.GetSampleSum() / float64(b.Count)
				}
				f.Batches = append(f.Batches, b)
			}
		case metricModelCalls:
			f.ModelCalls = counts(mf)
		case metricInferOutcomes:
			f.InferOutcomes = counts(mf)
		case metricResults:
			f.Results = counts(mf)
		case metricInflight:
			f.Inflight = counts(mf)
		case metricCostFixed:
			for _, m := range mf.GetMetric() {
				cost(m).Fixed = m.GetGauge().GetValue()
			}
		case metricCostPerItem:
			for _, m := range mf.GetMetric() {
				cost(m).PerItem = m.GetGauge().GetValue()
			}
		}
	}
	for _, c := range costs {
		f.Costs = append(f.Costs, *c)
	}
	slices.SortFunc(f.Costs, func(a, b CostFigure) int {
		return cmp.Or(cmp.Compare(a.Model, b.Model), cmp.Compare(a.Version, b.Version))
	})
	slices.SortFunc(f.Batches, func(a, b BatchFigure) int { return cmp.Compare(a.Model, b.Model) })
	for _, c := range []*[]Count{&f.ModelCalls, &f.InferOutcomes, &f.Results, &f.Inflight} {
		if *c == nil {
			*c = []Count{}
		}
	}
	return f
}

// counts reads a counter or gauge family; Gather has sorted its series by
// label values already. Counters at 0 are left out: the stages create
// their series up front (so that rates start at 0), and an empty count says
// nothing on the status page.
func counts(mf *dto.MetricFamily) []Count {
	out := make([]Count, 0, len(mf.GetMetric()))
	for _, m := range mf.GetMetric() {
		var v float64
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			v = m.GetCounter().GetValue()
			if v == 0 {
				continue
			}
		case dto.MetricType_GAUGE:
			v = m.GetGauge().GetValue()
		default:
			v = m.GetUntyped().GetValue()
		}
		out = append(out, Count{Labels: labels(m), Value: v})
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
