package config

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func saslCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "admin", "admin-secret"),
		kfake.User("PLAIN", "app", "app-secret"),
		kfake.User("SCRAM-SHA-512", "app512", "app512-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func secured(brokers []string, mech, user, pass string) *Config {
	c := Defaults()
	c.Kafka.Brokers = brokers
	c.Kafka.SASL = SASL{Mechanism: mech, Username: user, Password: pass}
	return &c
}

func TestSASLMechanisms(t *testing.T) {
	cl := saslCluster(t)
	for _, tc := range []struct{ mech, user, pass string }{
		{"SCRAM-SHA-256", "admin", "admin-secret"},
		{"PLAIN", "app", "app-secret"},
		{"SCRAM-SHA-512", "app512", "app512-secret"},
	} {
		t.Run(tc.mech, func(t *testing.T) {
			c := secured(cl.ListenAddrs(), tc.mech, tc.user, tc.pass)
			opts, err := c.KafkaOpts()
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckKafka(ctx(t), c, opts); err != nil {
				t.Fatalf("right credentials: %v", err)
			}
		})
	}
}

// A user with the wrong password is told which settings to fix.
func TestSASLWrongCredentials(t *testing.T) {
	cl := saslCluster(t)
	c := secured(cl.ListenAddrs(), "PLAIN", "app", "wrong")
	opts, err := c.KafkaOpts()
	if err != nil {
		t.Fatal(err)
	}
	err = CheckKafka(ctx(t), c, opts)
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	for _, want := range []string{`user "app" with PLAIN`, "kafka.sasl.password"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// kfake has no OAUTHBEARER: the broker's refusal of the mechanism reaches
// the user as a setting to change.
func TestSASLMechanismRefused(t *testing.T) {
	cl := saslCluster(t)
	c := Defaults()
	c.Kafka.Brokers = cl.ListenAddrs()
	c.Kafka.SASL = SASL{Mechanism: "OAUTHBEARER", Token: "t"}
	opts, err := c.KafkaOpts()
	if err != nil {
		t.Fatal(err)
	}
	err = CheckKafka(ctx(t), &c, opts)
	if err == nil || !strings.Contains(err.Error(), "does not accept SASL mechanism OAUTHBEARER") {
		t.Fatalf("got %v", err)
	}
}

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, and returns their paths.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := pki{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// Mutual TLS: the broker requires a client certificate signed by its CA.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	srvCert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(p.ca)
	pool.AppendCertsFromPEM(caPEM)
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)

	check := func(tc TLS) error {
		c := Defaults()
		c.Kafka.Brokers = cl.ListenAddrs()
		c.Kafka.TLS = tc
		c.Registry.URL = "http://127.0.0.1:1"
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		opts, err := c.KafkaOpts()
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx(t), 3*time.Second)
		defer cancel()
		return CheckKafka(cctx, &c, opts)
	}
	if err := check(TLS{Enabled: true, CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey}); err != nil {
		t.Fatalf("CA and client certificate: %v", err)
	}
	if err := check(TLS{Enabled: true, CAFile: p.ca}); err == nil {
		t.Error("connected without the client certificate the broker requires")
	}
	if err := check(TLS{Enabled: true}); err == nil {
		t.Error("connected without trusting the private CA")
	}
	err = check(TLS{})
	if err == nil || !strings.Contains(err.Error(), "kafka.tls.enabled") {
		t.Errorf("plaintext to a TLS listener: want a hint at kafka.tls.enabled, got %v", err)
	}
	if err := check(TLS{Enabled: true, CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil || !strings.Contains(err.Error(), "kafka.tls: ca_file") {
		t.Errorf("missing CA file: got %v", err)
	}
}

func TestRegistryAuth(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("reg:reg-secret"))
	for _, tc := range []struct {
		name   string
		server string
		set    func(*Registry)
		ok     bool
	}{
		{"basic", basic, func(r *Registry) { r.Username, r.Password = "reg", "reg-secret" }, true},
		{"basic wrong", basic, func(r *Registry) { r.Username, r.Password = "reg", "nope" }, false},
		{"bearer", "Bearer tok-1", func(r *Registry) { r.BearerToken = "tok-1" }, true},
		{"none", "Bearer tok-1", func(*Registry) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := srfake.New(srfake.WithAuth(tc.server))
			t.Cleanup(reg.Close)
			c := Defaults()
			c.Registry.URL = reg.URL()
			tc.set(&c.Registry)
			opts, err := c.RegistryOpts("")
			if err != nil {
				t.Fatal(err)
			}
			cl, err := sr.NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckRegistry(ctx(t), &c, cl)
			if tc.ok && err != nil {
				t.Fatalf("want access, got %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "check registry.username and registry.password, or registry.bearer_token")) {
				t.Fatalf("want an error naming the settings, got %v", err)
			}
		})
	}
}

// The registry behind TLS with a private CA: trusted with registry.tls.ca_file,
// refused without it.
func TestRegistryTLS(t *testing.T) {
	p := newPKI(t)
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	reg := srfake.NewRegistry()
	ts := httptest.NewUnstartedServer(reg.Handler())
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	check := func(tc TLS) error {
		c := Defaults()
		c.Registry.URL = ts.URL
		c.Registry.TLS = tc
		opts, err := c.RegistryOpts("")
		if err != nil {
			return err
		}
		cl, err := sr.NewClient(opts...)
		if err != nil {
			return err
		}
		return CheckRegistry(ctx(t), &c, cl)
	}
	if err := check(TLS{Enabled: true, CAFile: p.ca}); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if err := check(TLS{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA: want a certificate error, got %v", err)
	}
}

// OAUTHBEARER with token_file reads the file at every authentication, so a
// rotated token is used by the next connection. (kfake has no OAUTHBEARER;
// this checks the client's first message.)
func TestOAuthTokenFileIsReadAtEachAuthentication(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	s := SASL{Mechanism: "OAUTHBEARER", TokenFile: file}
	m, err := s.mechanism()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"first.jwt", "rotated.jwt"} {
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, msg, err := m.Authenticate(ctx(t), "127.0.0.1:9092")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(msg), "auth=Bearer "+tok+"\x01") {
			t.Errorf("first message %q does not carry %q", msg, tok)
		}
	}
	os.Remove(file)
	if _, _, err := m.Authenticate(ctx(t), "127.0.0.1:9092"); err == nil || !strings.Contains(err.Error(), "kafka.sasl.token_file") {
		t.Errorf("missing token file: got %v", err)
	}
}
