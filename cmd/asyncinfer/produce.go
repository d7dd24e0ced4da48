package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/client"
	"github.com/asyncinfer/asyncinfer/config"
)

func newProduceCmd() *cobra.Command {
	var (
		fl          *config.Flags
		file        string
		rate        float64
		concurrency int
		quiet       bool
	)
	cmd := &cobra.Command{
		Use:   "produce",
		Short: "Produce inference requests from JSON lines (stdin or a file) as Avro",
		Long: `produce reads one JSON request per line, checks it, encodes it as Avro in the
Confluent wire format with the registry's schema id, and produces it to the
requests topic keyed by its idempotency key (or request id) with Kafka's
murmur2 partitioner, as any client must. A request without request_id gets a
random one. It prints {"line":N,"request_id":"..."} for every request the
broker acknowledged.

A line that is not a valid request is reported on stderr with its line number
and produced nowhere; produce goes on with the next line and exits with status
1 at the end if any line was refused.

The JSON form: {"model": "m", "inputs": [{"name": "x", "datatype": "FP32",
"shape": [2], "data": [1, 2]}]}, and optionally request_id, idempotency_key,
tenant, model_version, parameters (string, number or boolean values),
priority, deadline_ms (absolute, ms since the epoch), reply_topic,
created_at_ms (default: now).`,
		Example: `  echo '{"model":"sim","inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]}]}' |
    asyncinfer produce --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081

  asyncinfer produce --file requests.jsonl --rate 500 --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rate < 0 {
				return fmt.Errorf("--rate %v: want >= 0 (0: as fast as possible)", rate)
			}
			if concurrency < 1 {
				return fmt.Errorf("--concurrency %d: want at least 1", concurrency)
			}
			cfg, log, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("--file: %w", err)
				}
				defer f.Close() //nolint:errcheck // read-only file: a close error loses nothing
				in = f
			}
			ctx := cmd.Context()
			c, err := connect(ctx, cfg, false, log)
			if err != nil {
				return err
			}
			defer c.Close()
			cl, err := client.New(ctx, client.Config{Conn: c.kopts, Registry: c.registry, Prefix: cfg.Topics.Prefix,
				MaxUnclaimed: -1, Logger: log})
			if err != nil {
				return err
			}
			defer cl.Close()
			return produceLines(ctx, cl, in, cmd.OutOrStdout(), cmd.ErrOrStderr(), rate, concurrency, quiet)
		},
	}
	fs := cmd.Flags()
	fl = config.BindSomeFlags(fs, config.ConnectionSettings)
	fs.StringVar(&file, "file", "-", "JSON lines to read (-: stdin)")
	fs.Float64Var(&rate, "rate", 0, "requests per second (0: as fast as the broker acknowledges)")
	fs.IntVar(&concurrency, "concurrency", 64, "requests waiting for the broker's acknowledgement at once")
	fs.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	return cmd
}

func produceLines(ctx context.Context, cl *client.Client, in io.Reader, out, errw io.Writer, rate float64,
	concurrency int, quiet bool) error {
	var (
		mu               sync.Mutex // out and errw
		wg               sync.WaitGroup
		sem              = make(chan struct{}, concurrency)
		acked, refused   atomic.Int64
		start            = time.Now()
		lineNo           int
		enc              = json.NewEncoder(out)
		lastProgress     = start
		readErr          error
		progressInterval = time.Second
		sent             int // requests handed to Submit, for the rate
	)
	report := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(errw, format+"\n", a...)
		mu.Unlock()
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n := lineNo
		req, err := parseRequestLine(line)
		if err != nil {
			refused.Add(1)
			report("line %d: %v (not produced)", n, err)
			continue
		}
		if req.CreatedAtMs == 0 {
			req.CreatedAtMs = time.Now().UnixMilli()
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		sent++
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			id, err := cl.Submit(ctx, req)
			if err != nil {
				refused.Add(1)
				report("line %d: %v (not produced)", n, err)
				return
			}
			acked.Add(1)
			mu.Lock()
			enc.Encode(map[string]any{"line": n, "request_id": id}) //nolint:errcheck // stdout
			mu.Unlock()
		}()
		if !quiet && time.Since(lastProgress) >= progressInterval {
			lastProgress = time.Now()
			report("produced %d, refused %d, %.0f/s", acked.Load(), refused.Load(), float64(acked.Load())/time.Since(start).Seconds())
		}
	}
	readErr = sc.Err()
	wg.Wait()
	if !quiet && time.Since(start) >= progressInterval {
		report("produced %d, refused %d in %v", acked.Load(), refused.Load(), time.Since(start).Round(time.Millisecond))
	}
	if readErr != nil {
		return fmt.Errorf("reading line %d: %w", lineNo+1, readErr)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stopped after %d acknowledged: %w", acked.Load(), err)
	}
	if r := refused.Load(); r > 0 {
		return fmt.Errorf("%d of %d requests were not produced (see the lines above)", r, r+acked.Load())
	}
	return nil
}
