// Package integration runs asyncinfer against a real Apache Kafka broker: the
// real binary, one process per stage, started by the tests.
//
// The broker comes from, in order:
//   - KAFKA_BROKERS: an existing cluster (nothing is started);
//   - a container engine (Docker, or podman's Docker-compatible socket in
//     DOCKER_HOST) through testcontainers-go: the image
//     ASYNCINFER_KAFKA_IMAGE, default the upstream apache/kafka, started
//     with host networking on free ports so that the advertised listener
//     stays valid across a restart.
//
// With neither, the suite skips with one line, or fails when
// ASYNCINFER_REQUIRE_INTEGRATION=1 (set by .ci/run). `make test` sets up
// podman and builds the image where no engine exists (deploy/kafka).
//
// The schema registry is franz-go's srfake served over HTTP by the test
// process, on a listener a test can close and open again (a registry
// outage): no Confluent-compatible registry can run here (its images and
// packages are outside the registries this machine reaches).
//
// The suite writes integration-report.json (ASYNCINFER_INTEGRATION_REPORT
// overrides the path): the broker's version and cluster id as it reported
// them, whether it ran, and per test the counts verify measured, with what
// the test measured besides (figures: restart times, peaks of memory).
package integration

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// DefaultImage is the upstream image the suite runs where an engine with
// registry access exists.
const DefaultImage = "apache/kafka:4.1.1"

// env is what every test of the suite shares.
var env struct {
	brokers  []string
	sasl     string // the SASL_PLAINTEXT listener (container only; "" otherwise)
	registry string // srfake's URL
	reg      *registry
	bin      string // the asyncinfer binary
	broker   *broker
	skip     string // why the suite skips; "" when it runs
}

// broker is the Kafka the suite runs against.
type broker struct {
	Source    string `json:"source"` // "KAFKA_BROKERS", or "container <image>"
	Image     string `json:"image,omitempty"`
	Engine    string `json:"engine,omitempty"`
	Version   string `json:"version"`    // the broker's answer to ApiVersions, as franz-go's kversion reads it
	ClusterID string `json:"cluster_id"` // from Metadata
	Brokers   string `json:"brokers"`
	SASL      string `json:"sasl_listener,omitempty"` // PLAIN and SCRAM-SHA-256, for the secured-cluster test
	container testcontainers.Container
	port      int
}

func TestMain(m *testing.M) {
	code := run(m)
	os.Exit(code)
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep := &report{Started: time.Now().UTC()}
	defer func() {
		if err := rep.write(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: report:", err)
		}
	}()

	b, err := startBroker(ctx)
	if err != nil {
		if os.Getenv("ASYNCINFER_REQUIRE_INTEGRATION") == "1" {
			fmt.Fprintln(os.Stderr, "integration: ASYNCINFER_REQUIRE_INTEGRATION=1 but no broker:", err)
			rep.Ran, rep.Skipped = false, "no broker: "+err.Error()
			return 1
		}
		env.skip = "integration: skipped, no Kafka broker: " + err.Error()
		fmt.Println(env.skip)
		rep.Skipped = env.skip
		return m.Run() // every test skips with the reason
	}
	env.broker, env.brokers, env.sasl = b, strings.Split(b.Brokers, ","), b.SASL
	defer b.stop()
	rep.Ran, rep.Broker = true, b
	fmt.Printf("integration: Apache Kafka %s, cluster id %s, at %s (%s)\n", b.Version, b.ClusterID, b.Brokers, b.Source)

	reg, err := startRegistry()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: registry:", err)
		return 1
	}
	defer reg.close()
	env.reg, env.registry = reg, reg.url()

	dir, err := os.MkdirTemp("", "asyncinfer-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.bin = filepath.Join(dir, "asyncinfer")
	build := exec.CommandContext(ctx, "go", "build", "-o", env.bin, "../cmd/asyncinfer")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: build asyncinfer:", err)
		return 1
	}
	theReport = rep
	defer stopMLServer()
	return m.Run()
}

// registry is srfake served on a listener of ours, so that a test can take
// it down (connections refused, open ones cut) and bring it back on the same
// address.
type registry struct {
	fake *srfake.Registry
	addr string
	mu   sync.Mutex
	srv  *http.Server // nil while down
}

func startRegistry() (*registry, error) {
	r := &registry{fake: srfake.NewRegistry()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	return r, nil
}

func (r *registry) url() string { return "http://" + r.addr }

func (r *registry) serve(ln net.Listener) {
	r.srv = &http.Server{Handler: r.fake.Handler(), ReadHeaderTimeout: 10 * time.Second}
	srv := r.srv
	go func() { _ = srv.Serve(ln) }()
}

// down closes the listener and every open connection: from now on the
// registry refuses connections, as one that crashed does.
func (r *registry) down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close()
		r.srv = nil
	}
}

// up serves the registry again on its address.
func (r *registry) up() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port is ours; a moment for the old socket to go
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			r.serve(ln)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("serve the registry on %s again: %w", r.addr, err)
}

func (r *registry) close() { r.down() }

// need skips the test when the suite has no broker.
func need(t *testing.T) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
}

// startBroker finds or starts the broker.
func startBroker(ctx context.Context) (*broker, error) {
	if bs := os.Getenv("KAFKA_BROKERS"); bs != "" {
		b := &broker{Source: "KAFKA_BROKERS", Brokers: bs}
		return b, b.describe(ctx)
	}
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return nil, fmt.Errorf("no container engine (%w); set KAFKA_BROKERS or DOCKER_HOST", err)
	}
	defer provider.Close()
	if err := provider.Health(ctx); err != nil {
		return nil, fmt.Errorf("no container engine answers (%w); set KAFKA_BROKERS or DOCKER_HOST", err)
	}
	image := os.Getenv("ASYNCINFER_KAFKA_IMAGE")
	if image == "" {
		image = DefaultImage
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	b := &broker{Source: "container", Image: image, port: ports[0], Brokers: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		SASL: fmt.Sprintf("127.0.0.1:%d", ports[2]), Engine: os.Getenv("DOCKER_HOST")}
	if b.Engine == "" {
		b.Engine = "default Docker socket"
	}
	req := testcontainers.ContainerRequest{
		Image: image,
		Env: map[string]string{
			// The variables the upstream apache/kafka image reads; the image
			// built by deploy/kafka reads the same ones.
			"CLUSTER_ID":          clusterID(),
			"KAFKA_NODE_ID":       "1",
			"KAFKA_PROCESS_ROLES": "broker,controller",
			// A plaintext listener for the suite, and a SASL one (PLAIN with
			// a user in the JAAS config, SCRAM-SHA-256 with users the test
			// creates) for the secured-cluster test.
			"KAFKA_LISTENERS": fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d",
				ports[0], ports[1], ports[2]),
			"KAFKA_ADVERTISED_LISTENERS":                                             fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d", ports[0], ports[2]),
			"KAFKA_CONTROLLER_LISTENER_NAMES":                                        "CONTROLLER",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                                   "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
			"KAFKA_SASL_ENABLED_MECHANISMS":                                          "PLAIN,SCRAM-SHA-256",
			"KAFKA_LISTENER_NAME_SASL__PLAINTEXT_PLAIN_SASL_JAAS_CONFIG":             `org.apache.kafka.common.security.plain.PlainLoginModule required user_app="app-secret";`,
			"KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___256_SASL_JAAS_CONFIG": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
			"KAFKA_INTER_BROKER_LISTENER_NAME":                                       "PLAINTEXT",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                                         fmt.Sprintf("1@127.0.0.1:%d", ports[1]),
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                                 "1",
			// 50 partitions each (the default) make the first group join and
			// the first transaction seconds slower on a small machine.
			"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                     "4",
			"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS":             "4",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "false",
			"KAFKA_NUM_PARTITIONS":                                   "1",
			"KAFKA_HEAP_OPTS":                                        "-Xmx512m -Xms512m",
		},
		// Host networking keeps every connection on 127.0.0.1 and the
		// advertised listener valid across a restart; podman refuses host
		// mode while the request names a network, hence the endpoint reset.
		HostConfigModifier: func(hc *container.HostConfig) { hc.NetworkMode = "host" },
		EndpointSettingsModifier: func(m map[string]*network.EndpointSettings) {
			for k := range m {
				delete(m, k)
			}
		},
		WaitingFor: wait.ForLog("Kafka Server started").WithStartupTimeout(2 * time.Minute),
	}
	c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return nil, fmt.Errorf("start %s: %w", image, err)
	}
	b.container = c
	b.Source = "container " + image
	if err := b.describe(ctx); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// describe asks the broker for its version and cluster id (and so checks it
// answers).
func (b *broker) describe(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(b.Brokers, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var lastErr error
	for ctx.Err() == nil {
		md, err := adm.BrokerMetadata(ctx)
		if err == nil {
			b.ClusterID = md.Cluster
			vs, err := adm.ApiVersions(ctx)
			if err != nil {
				return fmt.Errorf("ApiVersions: %w", err)
			}
			for _, v := range vs.Sorted() {
				if v.Err == nil {
					b.Version = v.VersionGuess()
					break
				}
			}
			return nil
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("broker %s does not answer: %w", b.Brokers, lastErr)
}

func (b *broker) stop() {
	if b.container != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = b.container.Terminate(ctx)
	}
}

// freePorts reserves n free ports on 127.0.0.1 and releases them for the
// broker to take. They are picked below the kernel's ephemeral range: the
// broker's ports are bound again after each restart, while clients keep
// connecting, and a port inside the range can meanwhile be the local end of
// an outgoing connection (or of a client's connection to itself while nothing
// listens there).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				lo = v
			}
		}
	}
	var out []int
	for tries := 0; len(out) < n && tries < 1000; tries++ {
		p := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		out = append(out, p)
	}
	if len(out) < n {
		return nil, fmt.Errorf("no %d free ports below %d on 127.0.0.1", n, lo)
	}
	return out, nil
}

// report is integration-report.json.
type report struct {
	Started time.Time     `json:"started"`
	Ran     bool          `json:"ran"`
	Skipped string        `json:"skipped,omitempty"`
	Broker  *broker       `json:"broker,omitempty"`
	Tests   []*testReport `json:"tests"`
	mu      sync.Mutex
}

type testReport struct {
	Name        string  `json:"name"`
	Passed      bool    `json:"passed"`
	Requests    int     `json:"requests"`
	Lost        int     `json:"lost"`
	Conflicting int     `json:"conflicting"`
	Repeated    int     `json:"repeated"`
	Duration    float64 `json:"duration_seconds"`
	Notes       string  `json:"notes,omitempty"`
	Skipped     bool    `json:"skipped,omitempty"`
	// Figures are what a test measured besides the counts (restart times,
	// peaks of memory), by name with the unit in it.
	Figures map[string]float64 `json:"figures,omitempty"`
}

// figure records a measurement.
func (tr *testReport) figure(name string, v float64) {
	if tr.Figures == nil {
		tr.Figures = map[string]float64{}
	}
	tr.Figures[name] = v
}

var theReport *report

// record adds a test's counts to the report when the test ends.
func record(t *testing.T, tr *testReport) {
	start := time.Now()
	tr.Name = t.Name()
	t.Cleanup(func() {
		tr.Duration = time.Since(start).Seconds()
		tr.Passed = !t.Failed()
		tr.Skipped = t.Skipped()
		if theReport != nil {
			theReport.mu.Lock()
			theReport.Tests = append(theReport.Tests, tr)
			theReport.mu.Unlock()
		}
	})
}

func (r *report) write() error {
	path := os.Getenv("ASYNCINFER_INTEGRATION_REPORT")
	if path == "" {
		path = "../integration-report.json"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

var errNoReady = errors.New("not ready")

// ready polls an admin server's /readyz.
func ready(addr string) error {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errNoReady
	}
	return nil
}

// clusterID is a fresh KRaft cluster id (16 random bytes, base64url), so the
// report's cluster id is the broker's answer, not a constant.
func clusterID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
