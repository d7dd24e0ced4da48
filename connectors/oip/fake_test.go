package oip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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
	Data       json.RawMessage `json:"data,omitempty"`
	Binary     []byte          `json:"-"` // its data in the binary extension's form
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
	var bin []byte
	if h := r.Header.Get("Inference-Header-Content-Length"); h != "" {
		// The binary tensor data extension, as its specification says: the
		// JSON part, then each input's data whose binary_data_size it gives.
		n, err := strconv.Atoi(h)
		if err != nil || n > len(body) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"fake: header %q"}`, h)
			return
		}
		body, bin = body[:n], body[n:]
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":%q}`, "fake: "+err.Error())
		return
	}
	for k := range req.Inputs {
		in := &req.Inputs[k]
		size, ok := in.Parameters["binary_data_size"].(float64)
		if !ok {
			continue
		}
		if int(size) > len(bin) || fakeBinaryCount(in.Datatype, bin[:int(size)]) != fakeCount(in.Shape) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"fake: input %s: %v bytes of binary data do not hold shape %v"}`, in.Name, size, in.Shape)
			return
		}
		in.Binary, bin = bin[:int(size)], bin[int(size):]
	}
	if len(bin) > 0 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"fake: %d bytes of binary data left over"}`, len(bin))
		return
	}
	for _, in := range req.Inputs {
		if in.Binary != nil {
			continue
		}
		// As a real server would: the data must be a JSON array holding
		// as many elements as the shape says.
		var data []any
		if err := json.Unmarshal(in.Data, &data); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q}`, "fake: input "+in.Name+": "+err.Error())
			return
		}
		if n, want := int64(len(flatten(data))), fakeCount(in.Shape); n != want {
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
	if req.Parameters["binary_data_output"] == true {
		var data []byte
		for k := range req.Inputs {
			in := &req.Inputs[k]
			if in.Binary == nil {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"error":"fake: JSON in, binary out is not faked"}`)
				return
			}
			in.Parameters = map[string]any{"binary_data_size": len(in.Binary)}
			data = append(data, in.Binary...)
		}
		js, _ := json.Marshal(map[string]any{"model_name": "echo", "id": "fake", "outputs": req.Inputs})
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Inference-Header-Content-Length", strconv.Itoa(len(js)))
		w.Write(append(js, data...))
		return
	}
	out := map[string]any{"model_name": "echo", "id": "fake", "outputs": req.Inputs}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func fakeCount(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// fakeBinaryCount counts the elements of binary data (-1: not whole).
func fakeBinaryCount(datatype string, b []byte) int64 {
	sizes := map[string]int{"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2,
		"INT32": 4, "UINT32": 4, "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8}
	if datatype != "BYTES" {
		if sizes[datatype] == 0 || len(b)%sizes[datatype] != 0 {
			return -1
		}
		return int64(len(b) / sizes[datatype])
	}
	n := int64(0)
	for len(b) > 0 {
		if len(b) < 4 || int(binary.LittleEndian.Uint32(b)) > len(b)-4 {
			return -1
		}
		b = b[4+binary.LittleEndian.Uint32(b):]
		n++
	}
	return n
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
