package main

import (
	"context"
	"fmt"
	"time"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/connectors/oip"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// newBackend builds a configured model's backend (m has its defaults).
func newBackend(m config.Model) (infer.Model, error) {
	switch m.Backend {
	case "oip":
		return newOIP(m)
	default:
		outages, _ := parseOutage(m.Sim.Outage) // validated
		return sim.New(sim.Config{Fixed: m.Sim.Fixed, PerItem: m.Sim.PerItem, Spin: m.Sim.Spin,
			ErrorRate: m.Sim.ErrorRate, Outages: outages})
	}
}

func newOIP(m config.Model) (*oip.Model, error) {
	o := m.OIP
	opts := []oip.Option{oip.Version(o.Version), oip.MaxConnections(o.MaxConnections), oip.BinaryData(o.BinaryData)}
	tc, err := o.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("models %s: oip.tls: %w", m.Name, err)
	}
	if tc != nil {
		opts = append(opts, oip.TLS(tc))
	}
	switch {
	case o.Auth.BearerToken != "":
		opts = append(opts, oip.BearerToken(o.Auth.BearerToken))
	case o.Auth.Header != "":
		opts = append(opts, oip.Header(o.Auth.Header, o.Auth.HeaderValue))
	}
	var in []oip.Input
	for _, i := range o.Inputs {
		in = append(in, oip.Input{Name: i.Name, Datatype: i.Datatype, Shape: i.Shape})
	}
	return oip.New(o.URL, o.ModelName, append(opts, oip.ExpectInputs(in))...)
}

// checkBackends runs the start-up check of every backend that has one (an
// OIP server: the model ready, its metadata declaring the configured
// inputs), so that a wrong URL, name or input stops the infer stage at
// start with an error that says so, not later as FAILED requests.
func checkBackends(ctx context.Context, ms []infer.ModelConfig) error {
	for _, mc := range ms {
		c, ok := mc.Backend.(interface{ Check(context.Context) error })
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, max(mc.Timeout, 10*time.Second))
		err := c.Check(cctx)
		cancel()
		if err != nil {
			return err // it names the model and the server
		}
	}
	return nil
}
