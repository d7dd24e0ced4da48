package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process of the benchmark: a stage (asyncinfer run), a
// raw-chain hop (asyncinfer bench hop) or the embedded broker (asyncinfer
// dev-broker). Each runs the same binary as the benchmark, so what is
// measured is what is shipped.
type proc struct {
	name  string
	cmd   *exec.Cmd
	out   *tail // stdout and stderr, the last 64 KiB
	done  chan struct{}
	err   error // after done
	admin string
}

// tail keeps the last bytes written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - 64<<10; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// startProc starts bin with args. The child gets SIGTERM if the benchmark
// dies (Pdeathsig, Linux), so an interrupted run leaves nothing behind.
func startProc(name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, out: &tail{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited says why the process ended, with the end of its output.
func (p *proc) exited() error {
	err := p.err
	if err == nil {
		err = errors.New("status 0")
	}
	return fmt.Errorf("%s exited (%w):\n%s", p.name, err, lastLines(p.out.String(), 15))
}

var adminRE = regexp.MustCompile(`admin http://([^/\s]+)/`)

// waitAdmin waits for the "admin http://host:port/" line every stage and
// hop prints, and returns the address.
func (p *proc) waitAdmin(ctx context.Context, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		if m := adminRE.FindStringSubmatch(p.out.String()); m != nil {
			p.admin = m[1]
			return p.admin, nil
		}
		if err := p.pause(ctx, deadline, 2*time.Millisecond); err != nil {
			return "", fmt.Errorf("%s: no admin address: %w", p.name, err)
		}
	}
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if httpOK(ctx, "http://"+p.admin+"/readyz") {
			return nil
		}
		if err := p.pause(ctx, deadline, 25*time.Millisecond); err != nil {
			return fmt.Errorf("%s: not ready: %w\n%s", p.name, err, lastLines(p.out.String(), 10))
		}
	}
}

// pause waits d, failing when the process ended, ctx did, or the deadline
// passed.
func (p *proc) pause(ctx context.Context, deadline time.Time, d time.Duration) error {
	if time.Now().After(deadline) {
		return errors.New("timed out")
	}
	select {
	case <-p.done:
		return p.exited()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// stop sends SIGTERM (a stage drains: finishes and commits what it holds)
// and waits; after within, SIGKILL.
func (p *proc) stop(within time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(within):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v: killed; its last lines:\n%s", p.name, within, lastLines(p.out.String(), 40))
	}
}

func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close() //nolint:errcheck // a status is all we read
	return resp.StatusCode == http.StatusOK
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cpuSeconds is the user+system CPU time a process has used, from
// /proc/<pid>/stat (in USER_HZ, 100 a second on Linux); NaN when unknown.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return nan
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nan
	}
	// The fields after the command name, which ends with the last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nan
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nan
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return nan
	}
	return (ut + st) / 100
}

// rssBytes is a process's resident set, from /proc/<pid>/statm.
func rssBytes(pid int) float64 {
	if pid <= 0 {
		return nan
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return nan
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return nan
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return nan
	}
	return pages * float64(os.Getpagesize())
}

// loadAvg is the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nan
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nan
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nan
	}
	return v
}
