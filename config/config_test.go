package config

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestGoodExamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no good examples")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(b); err != nil {
				t.Fatalf("want valid, got %v", err)
			}
		})
	}
}

// Each bad example says, in its first line ("# error: …"), what the error
// must contain.
func TestBadExamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no bad examples")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _ := bufio.NewReader(fh).ReadString('\n')
			fh.Close()
			want, ok := strings.CutPrefix(strings.TrimSpace(first), "# error: ")
			if !ok {
				t.Fatalf("first line must be '# error: <expected text>', got %q", first)
			}
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fl := BindFlags(fs)
			if err := fs.Parse([]string{"--config", f}); err != nil {
				t.Fatal(err)
			}
			_, _, err = Load(fl, nil)
			if err == nil {
				t.Fatalf("want an error containing %q, got none", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("want an error containing %q, got %v", want, err)
			}
			if !strings.Contains(err.Error(), f) {
				t.Fatalf("error does not name the file %s: %v", f, err)
			}
		})
	}
}

// Flags beat the environment, which beats the file, which beats the
// defaults.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	err := os.WriteFile(file, []byte(`
kafka: {brokers: [file:9092], client_id: from-file}
registry: {url: http://file:8081}
topics: {partitions: 8}
dedup: {window: 1m}
log_level: debug
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fl := BindFlags(fs)
	if err := fs.Parse([]string{"--brokers", "flag:9092", "--dedup-window", "3m", "--stages", "infer", "--stages", "emit",
		"--exactly-once", "--topics-create=false"}); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"ASYNCINFER_CONFIG=" + file,
		"ASYNCINFER_KAFKA_BROKERS=env:9092",
		"ASYNCINFER_KAFKA_CLIENT_ID=from-env",
		"ASYNCINFER_DEDUP_WINDOW=2m",
		"ASYNCINFER_NOT_A_SETTING=1",
		"ASYNCINFER_REQUIRE_INTEGRATION=1",
		"HOME=/root",
	}
	c, src, err := Load(fl, env)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("brokers (flag alias > env > file)", strings.Join(c.Kafka.Brokers, ","), "flag:9092")
	check("client_id (env > file)", c.Kafka.ClientID, "from-env")
	check("dedup.window (flag > env > file)", c.Dedup.Window, 3*time.Minute)
	check("partitions (file > default)", c.Topics.Partitions, int32(8))
	check("log_level (file)", c.LogLevel, "debug")
	check("registry (file)", c.Registry.URL, "http://file:8081")
	check("emit.window (default)", c.Emit.Window, 10*time.Minute)
	check("stages (repeated list flag)", strings.Join(c.Stages, ","), "infer,emit")
	check("exactly_once (bare bool flag)", c.ExactlyOnce, true)
	check("topics.create (bool flag =false)", c.Topics.Create, false)
	check("file", src.File, file)
	if len(src.Warn) != 1 || !strings.Contains(src.Warn[0], "ASYNCINFER_NOT_A_SETTING") {
		t.Errorf("warnings = %q, want one about ASYNCINFER_NOT_A_SETTING", src.Warn)
	}
}

func TestEnvAndFlagErrorsNameTheSetting(t *testing.T) {
	_, _, err := Load(nil, []string{"ASYNCINFER_TOPICS_PARTITIONS=many"})
	if err == nil || !strings.Contains(err.Error(), "ASYNCINFER_TOPICS_PARTITIONS (topics.partitions): want an integer") {
		t.Fatalf("got %v", err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fl := BindFlags(fs)
	if err := fs.Parse([]string{"--runner-producer-linger", "soon"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = Load(fl, nil)
	if err == nil || !strings.Contains(err.Error(), "--runner-producer-linger: want a duration") {
		t.Fatalf("got %v", err)
	}
}

func TestPrintMasksSecrets(t *testing.T) {
	b, err := os.ReadFile("testdata/good/secured.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Print(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"change-me", "change-me-too", "change-me-three"} {
		if strings.Contains(s, secret) {
			t.Errorf("printed config contains the secret %q:\n%s", secret, s)
		}
	}
	if !strings.Contains(s, Masked) || !strings.Contains(s, "SCRAM-SHA-512") || !strings.Contains(s, "latency_objective: 500ms") {
		t.Errorf("printed config lacks expected fields:\n%s", s)
	}
	// The original is untouched, and the printed file reads back (secrets aside).
	if c.Kafka.SASL.Password != "change-me" || c.Models[2].OIP.Auth.BearerToken != "change-me-three" {
		t.Error("Print changed the configuration it printed")
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("printed config does not parse back: %v", err)
	}
	if back.Models[1].Sim.PerItem != 50*time.Microsecond || back.Topics.Prefix != "prod.asyncinfer." {
		t.Errorf("round trip lost values: %+v", back)
	}
}

// Every setting has an environment variable and a flag that reach it.
func TestEverySettingIsReachable(t *testing.T) {
	def := Defaults()
	for _, s := range Settings(&def) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		BindFlags(fs)
		if fs.Lookup(s.Flag) == nil {
			t.Errorf("%s: no flag --%s", s.Path, s.Flag)
		}
		if s.Doc == "" {
			t.Errorf("%s: no doc", s.Path)
		}
	}
}

// Lanes from a file replace the default three; a model's admission
// defaults to reject with a latency objective and off without.
func TestLanesAndAdmission(t *testing.T) {
	b, err := os.ReadFile("testdata/good/lanes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Lanes) != 2 || c.Lanes[0].Name != "urgent" || c.Lanes[1].WaitFraction != 0.7 {
		t.Fatalf("lanes %+v", c.Lanes)
	}
	g, err := c.Graph()
	if err != nil {
		t.Fatal(err)
	}
	if g.Lanes[0].Topic != "asyncinfer.requests.accepted.urgent" || g.Lanes[1].Topic != "asyncinfer.requests.accepted" {
		t.Errorf("lane topics %+v", g.Lanes)
	}
	for _, tc := range []struct{ model, want string }{{"resnet", "reject"}, {"batch-scorer", "pause"}, {"offline", "off"}} {
		for _, m := range c.Models {
			if m.Name == tc.model {
				if got := ModelDefaults(m).Admission; got != tc.want {
					t.Errorf("%s: admission %q, want %q", tc.model, got, tc.want)
				}
			}
		}
	}
	if got := ModelDefaults(DefaultModel).Admission; got != "reject" {
		t.Errorf("the default model's admission %q, want reject (it has a latency objective)", got)
	}
	d := Defaults()
	if len(d.Lanes) != 3 || d.Lanes[2].Name != "low" {
		t.Errorf("default lanes %+v", d.Lanes)
	}
}
