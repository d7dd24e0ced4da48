package schemas

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current encoding")

// TestGolden pins the wire format: the exact bytes of each fixture, with the
// seeded schema ids. A difference means clients would see other bytes: if
// that is intended (it should not be, the schemas are frozen), run
// go test ./schemas -run TestGolden -update and review the diff.
func TestGolden(t *testing.T) {
	c, _ := newTestCodec(t)
	for _, m := range fixtures() {
		t.Run(m.name, func(t *testing.T) {
			b, err := m.encode(c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", m.name+".golden")
			if *update {
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("encoding changed:\n got %x\nwant %x", b, want)
			}
			// The golden bytes also pin decoding.
			got, err := m.decode(c, want)
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, m.value) {
				t.Errorf("golden bytes decode to\n%+v\nwant\n%+v", got, m.value)
			}
		})
	}
}
