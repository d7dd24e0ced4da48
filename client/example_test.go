package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/client"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Submit a request, wait for its result, and act on its status. (Compiled,
// not run: it needs a deployment.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg, err := sr.NewClient(sr.URLs("http://localhost:8081"))
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(ctx, client.Config{
		Conn:     []kgo.Opt{kgo.SeedBrokers("localhost:9092")},
		Registry: reg,
		// On the pipeline's --reply-topics allow-list; this client then
		// reads only its own results.
		ReplyTopic: "fraud-scoring.replies",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	req := &schemas.Request{
		IdempotencyKey: "order-1234", // the same order is scored once
		Model:          "fraud",
		DeadlineMs:     time.Now().Add(30 * time.Second).UnixMilli(),
		Inputs: []schemas.Tensor{
			{Name: "features", Datatype: "FP32", Shape: []int64{1, 3}, FP32: []float32{0.2, 14, 1}},
		},
	}
	id, err := c.Submit(ctx, req) // fills req.RequestID
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Await(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	switch res.Status {
	case schemas.StatusSucceeded:
		fmt.Println("score:", res.Outputs[0].FP32)
	case schemas.StatusFailed:
		fmt.Println("failed for good:", res.ErrorCode, res.ErrorMessage)
	case schemas.StatusRejected:
		// Shed under load: try again later as a new request id, same key.
		time.Sleep(time.Duration(res.RetryAfterMs) * time.Millisecond)
		req.RequestID = ""
		if _, err := c.Submit(ctx, req); err != nil {
			log.Fatal(err)
		}
	case schemas.StatusDuplicate:
		// The order was submitted before: the result delivered for
		// res.OriginalRequestID is the answer (Await it if this client
		// submitted it and has not handed it out yet).
		fmt.Println("already submitted as", res.OriginalRequestID)
	case schemas.StatusExpired:
		fmt.Println("too late:", res.Reason)
	}
}

// Every result read from the reply topic, for whichever request id;
// repeats (at-least-once delivery) are dropped by request id.
func ExampleClient_Results() {
	ctx := context.Background()
	reg, err := sr.NewClient(sr.URLs("http://localhost:8081"))
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(ctx, client.Config{Conn: []kgo.Opt{kgo.SeedBrokers("localhost:9092")}, Registry: reg,
		ReplyTopic: "fraud-scoring.replies"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	seen := map[string]bool{} // bound it in a real program, e.g. by time
	for res, err := range c.Results(ctx) {
		if err != nil {
			log.Print(err) // an undecodable record or a fetch error; the iteration goes on
			continue
		}
		if seen[res.RequestID] {
			continue // a repeat: identical to the first
		}
		seen[res.RequestID] = true
		fmt.Println(res.RequestID, res.Status)
	}
}
