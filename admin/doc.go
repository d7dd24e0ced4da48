// Package admin owns what an operator sees of a running process: consumer
// lag measured against the last stable offset (Lag, Watcher), and the HTTP
// admin server (Server) with /metrics, /healthz, /readyz, /status.json and a
// small status page.
//
// The package does not import the pipeline: the composition root adapts the
// runners' state to Source, so admin stays a leaf that any binary can use.
package admin
