package devstack

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"github.com/temporalio/ui-server/v2/server/server_options"
)

// The Temporal Web UI, as Temporal's own dev server embeds it
// (github.com/temporalio/ui-server/v2): a dev view of the lifecycle
// workflows (rotations, deletions, approvals, migrations), their
// histories and their pending timers. It is not part of keyflow's API and
// not for production: the UI can signal, cancel and terminate workflows
// with keyflow's own client certificate, so the dev stack serves it on
// loopback only, like the frontend, and without any login.
//
// The UI reaches the frontend over the dev stack's mutual TLS, with the
// same client certificate as keyflow's workers (temporaltls.go).

// uiReadyTimeout bounds the wait for the UI to answer after its start.
const uiReadyTimeout = 10 * time.Second

// checkUIListen refuses a UI address that is not on loopback.
func checkUIListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--ui-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--ui-listen %q: the Temporal Web UI is a dev view with keyflow's Temporal client certificate and no login; it listens on loopback only", addr)
	}
	return nil
}

// startUI serves the Web UI on addr (a loopback host; port 0 picks one).
func (s *Stack) startUI(addr string) error {
	if err := checkUIListen(addr); err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	// The UI server binds the port itself, and exits the process when it
	// cannot; so bind first here, to fail with an error instead (and to
	// pick a free port for port 0). The port is free again a moment later.
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return fmt.Errorf("failed to listen for the Temporal Web UI on %s: %w", addr, err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	files := s.Temporal.tlsFiles
	cfg := &uiconfig.Config{
		Host: host, Port: p, TemporalGRPCAddress: s.Temporal.HostPort(),
		EnableUI: true, HideLogs: true, DefaultNamespace: s.Temporal.Namespace(),
		DisableNewsFetch: true, NotifyOnNewVersion: false,
		TLS: uiconfig.TLS{
			CaFile: files.CAFile, CertFile: files.ClientCertFile, KeyFile: files.ClientKeyFile,
			ServerName: files.ServerName, EnableHostVerification: true,
		},
		// Plain HTTP on loopback: the CSRF cookie cannot be Secure.
		CORS: uiconfig.CORS{CookieInsecure: true},
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("the Temporal Web UI configuration: %w", err)
	}
	srv := uiserver.NewServer(server_options.WithConfigProvider(cfg))
	go func() { _ = srv.Start() }()
	s.closers = append(s.closers, srv.Stop)
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(p))
	if err := waitHTTP(url+"/", uiReadyTimeout); err != nil {
		return fmt.Errorf("the Temporal Web UI did not start on %s: %w", url, err)
	}
	s.UIURL = url
	return nil
}

// waitHTTP polls url until it answers 200.
func waitHTTP(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last error = errors.New("no answer")
	for time.Now().Before(deadline) {
		res, err := c.Get(url)
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return last
}
