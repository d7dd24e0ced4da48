package oip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeServer is a fake OIP v2 server (not a model server): its model
// "echo" answers every input back as an output of the same name, datatype,
// shape and data, decoded and re-encoded with encoding/json, so a round trip
// through it checks this package's hand-written encoder and decoder against
// the standard library's. It records the calls it gets. A test may replace
// the answer with its own handler.
type fakeServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []fakeCall
	answer func(w http.ResponseWriter, r *http.Request, req *fakeRequest) bool // true: answered
}

type fakeCall struct {
	Path    string
	Header  http.Header
	Request fakeRequest
}

type fakeTensor struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

type fakeRequest struct {
	ID         string         `json:"id,omitempty"`
	Inputs     []fakeTensor   `json:"inputs"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

// newFake starts a fake server; setup, if given, configures its
// http.Server before it starts.
func newFake(t *testing.T, setup ...func(*http.Server)) *fakeServer {
	f := &fakeServer{}
	f.Server = httptest.NewUnstartedServer(f)
	for _, s := range setup {
		s(f.Config)
	}
	f.Start()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/ready"):
		if f.answer != nil && f.answer(w, r, nil) {
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	case r.Method == http.MethodGet:
		if f.answer != nil && f.answer(w, r, nil) {
			return
		}
		fmt.Fprint(w, `{"name":"echo","versions":["1"],"platform":"fake","inputs":[{"name":"x","datatype":"FP64","shape":[-1,4]}],"outputs":[{"name":"x","datatype":"FP64","shape":[-1,4]}]}`)
		return
	case r.Method != http.MethodPost || !strings.HasSuffix(path, "/infer"):
		http.NotFound(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var req fakeRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":%q}`, "fake: "+err.Error())
		return
	}
	for _, in := range req.Inputs {
		// As a real server would: the data must be a JSON array holding
		// as many elements as the shape says.
		var data []any
		if err := json.Unmarshal(in.Data, &data); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q}`, "fake: input "+in.Name+": "+err.Error())
			return
		}
		want := int64(1)
		for _, d := range in.Shape {
			want *= d
		}
		if n := int64(len(flatten(data))); n != want {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"fake: input %s: shape %v needs %d elements, got %d"}`, in.Name, in.Shape, want, n)
			return
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{Path: path, Header: r.Header.Clone(), Request: req})
	f.mu.Unlock()
	if f.answer != nil && f.answer(w, r, &req) {
		return
	}
	out := map[string]any{"model_name": "echo", "id": "fake", "outputs": req.Inputs}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (f *fakeServer) Calls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.calls...)
}

func flatten(v []any) []any {
	var out []any
	for _, e := range v {
		if a, ok := e.([]any); ok {
			out = append(out, flatten(a)...)
			continue
		}
		out = append(out, e)
	}
	return out
}
