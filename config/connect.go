package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/pkg/sr"
)

// Config builds the tls.Config (nil if TLS is off).
func (t TLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, documented as testing only
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Mechanism builds the SASL mechanism (nil if none).
func (s SASL) mechanism() (sasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	case "OAUTHBEARER":
		if s.TokenFile == "" {
			return oauth.Auth{Token: s.Token}.AsMechanism(), nil
		}
		file := s.TokenFile
		return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return oauth.Auth{}, fmt.Errorf("kafka.sasl.token_file: %w", err)
			}
			return oauth.Auth{Token: strings.TrimSpace(string(b))}, nil
		}), nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q: unknown", s.Mechanism)
}

// KafkaOpts are the client options that reach the cluster: seed brokers,
// client id, TLS and SASL. brokers overrides Kafka.Brokers when not empty
// (the embedded broker's address).
func (c *Config) KafkaOpts(brokers ...string) ([]kgo.Opt, error) {
	if len(brokers) == 0 {
		brokers = c.Kafka.Brokers
	}
	if len(brokers) == 0 {
		return nil, errors.New("kafka.brokers: none given")
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if c.Kafka.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.Kafka.ClientID))
	}
	tc, err := c.Kafka.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	m, err := c.Kafka.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	if m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// RegistryOpts are the schema registry client's options. url overrides
// Registry.URL when not empty (the embedded registry).
func (c *Config) RegistryOpts(url string) ([]sr.ClientOpt, error) {
	if url == "" {
		url = c.Registry.URL
	}
	if url == "" {
		return nil, errors.New("registry.url: none given")
	}
	opts := []sr.ClientOpt{sr.URLs(url), sr.UserAgent("asyncinfer")}
	r := c.Registry
	if r.Username != "" {
		opts = append(opts, sr.BasicAuth(r.Username, r.Password))
	}
	if r.BearerToken != "" {
		opts = append(opts, sr.BearerToken(r.BearerToken))
	}
	tc, err := r.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("registry.tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, sr.DialTLSConfig(tc))
	}
	return opts, nil
}

// CheckKafka connects once and turns the usual failures into errors that say
// what to fix: unreachable brokers, TLS mismatches, wrong credentials.
func CheckKafka(ctx context.Context, c *Config, opts []kgo.Opt) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = kadm.NewClient(cl).BrokerMetadata(ctx)
	if err == nil {
		return nil
	}
	who := strings.Join(c.Kafka.Brokers, ",")
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState):
		return fmt.Errorf("kafka %s: authentication failed for user %q with %s: check kafka.sasl.username and kafka.sasl.password (or the token): %w",
			who, c.Kafka.SASL.Username, c.Kafka.SASL.Mechanism, err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("kafka %s: the broker does not accept SASL mechanism %s: set kafka.sasl.mechanism to one it enables: %w",
			who, c.Kafka.SASL.Mechanism, err)
	case errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed):
		return fmt.Errorf("kafka %s: user %q is not authorized: %w (asyncinfer topics acls prints the ACLs each stage needs)",
			who, c.Kafka.SASL.Username, err)
	case c.Kafka.SASL.Mechanism != "" && errors.Is(err, io.EOF):
		// Apache Kafka answers bad credentials with SaslAuthenticationFailed;
		// some brokers (and kfake) just close the connection.
		return fmt.Errorf("kafka %s: the broker closed the connection while authenticating user %q with %s: check kafka.sasl.username and kafka.sasl.password (or the token), that the listener uses SASL at all, and kafka.tls.enabled if it is TLS: %w",
			who, c.Kafka.SASL.Username, c.Kafka.SASL.Mechanism, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, io.EOF):
		return fmt.Errorf("kafka %s: no answer: check kafka.brokers, and kafka.tls.enabled if the listener is TLS (a TLS listener does not answer plaintext): %w", who, err)
	}
	return fmt.Errorf("kafka %s: %w", who, err)
}

// CheckRegistry asks the registry for its subjects once, and turns the usual
// failures into errors that say what to fix.
func CheckRegistry(ctx context.Context, c *Config, cl *sr.Client) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	_, err := cl.Subjects(ctx)
	if err == nil {
		return nil
	}
	var re *sr.ResponseError
	if errors.As(err, &re) && (re.StatusCode == 401 || re.StatusCode == 403) {
		how := "registry.username and registry.password, or registry.bearer_token"
		return fmt.Errorf("schema registry %s: HTTP %d (%s): check %s", c.Registry.URL, re.StatusCode, re.Message, how)
	}
	return fmt.Errorf("schema registry %s: %w", c.Registry.URL, err)
}
