// Package natsserver runs nats-server with JetStream inside the keyflow
// process, in operator mode with keyflow's tenant accounts. The dev stack
// and the tests use it; production runs a NATS cluster instead.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/workers/natsauth"
)

// Config configures an embedded server.
type Config struct {
	// StoreDir holds JetStream's file store.
	StoreDir string
	// Listen is host:port for external clients (the CLI). Empty means no
	// listener: in-process connections only, as tests use.
	Listen string
	// Identity provides the operator, accounts and the resolver.
	Identity *natsauth.Identity
	// SyncAlways makes JetStream fsync every stored message before it
	// acknowledges it (nats-server's sync_interval: always), so an
	// acknowledged record survives a power loss. Without it the file
	// store flushes on nats-server's interval (2 minutes): a process
	// crash (kill -9) loses nothing, since the kernel holds the writes,
	// but a power loss or OS crash can lose acknowledged records.
	SyncAlways bool
	// JetStreamDomain names this deployment's JetStream domain. Linked
	// deployments (package region) each have their own, so that their
	// streams and KV buckets stay apart across the leaf link.
	JetStreamDomain string
	// LeafListen is host:port where other deployments' servers connect
	// as leaf nodes (the hub side of a region link); empty: none.
	LeafListen string
	// LeafRemotes are the hub deployments this server connects to as a
	// leaf node (the spoke side of a region link).
	LeafRemotes []LeafRemote
}

// LeafRemote is one outgoing leaf-node connection to another deployment.
type LeafRemote struct {
	// URL is the other deployment's leaf listener, nats-leaf://host:port.
	URL string
	// CredentialsFile holds the creds of the link user the other
	// deployment issued (natsauth.Identity.RegionLinkCreds).
	CredentialsFile string
	// LocalAccount is the account here that the link binds to; empty:
	// the keyflow service account.
	LocalAccount string
}

// Start starts the server and waits until it is ready for connections.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" || cfg.Identity == nil {
		return nil, errors.New("natsserver: StoreDir and Identity are required")
	}
	opts := &server.Options{
		ServerName:         "keyflow",
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         4 * 1024 * 1024,
		JetStreamMaxMemory: 256 << 20,
		SyncAlways:         cfg.SyncAlways,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("failed to parse listen address %q: %w", cfg.Listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("failed to parse listen port %q: %w", port, err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT
		} else if err := checkListen(cfg.Listen); err != nil {
			return nil, err
		}
	}
	if err := cfg.Identity.ServerOptions(opts); err != nil {
		return nil, err
	}
	if err := leafOptions(opts, cfg); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("failed to create NATS server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("natsserver: server not ready within 10s")
	}
	if err := publishClaims(ns, cfg.Identity); err != nil {
		ns.Shutdown()
		return nil, err
	}
	return ns, nil
}

// checkListen binds addr once, so a taken port is reported as such (the
// server would only log it, and never become ready).
func checkListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("natsserver: failed to listen on %s: %w", addr, err)
	}
	return l.Close()
}

// ConnectService connects a keyflow worker in-process to the KF account.
func ConnectService(ns *server.Server, id *natsauth.Identity, name string) (*nats.Conn, error) {
	creds, err := id.ServiceCreds(name)
	if err != nil {
		return nil, err
	}
	return Connect(ns, creds, name)
}

// Connect connects in-process with the given creds.
func Connect(ns *server.Server, creds []byte, name string) (*nats.Conn, error) {
	opt, err := natsauth.CredsOption(creds)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns), opt, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("failed to connect to the embedded NATS server: %w", err)
	}
	return nc, nil
}

// leafOptions sets the JetStream domain and the leaf-node listener and
// remotes of a region link (docs/multi-region.md).
func leafOptions(opts *server.Options, cfg Config) error {
	opts.JetStreamDomain = cfg.JetStreamDomain
	if cfg.JetStreamDomain != "" {
		opts.ServerName = "keyflow-" + cfg.JetStreamDomain // leaf peers need distinct names
	}
	if cfg.LeafListen != "" {
		host, port, err := net.SplitHostPort(cfg.LeafListen)
		if err != nil {
			return fmt.Errorf("failed to parse leaf listen address %q: %w", cfg.LeafListen, err)
		}
		opts.LeafNode.Host = host
		if opts.LeafNode.Port, err = strconv.Atoi(port); err != nil {
			return fmt.Errorf("failed to parse leaf listen port %q: %w", port, err)
		}
		if opts.LeafNode.Port == 0 {
			opts.LeafNode.Port = server.RANDOM_PORT
		}
		// The other region connects to the address it was given (a
		// load balancer, a tunnel), never to addresses this server
		// would gossip: they are rarely reachable across regions.
		opts.LeafNode.NoAdvertise = true
	}
	for _, r := range cfg.LeafRemotes {
		u, err := url.Parse(r.URL)
		if err != nil {
			return fmt.Errorf("failed to parse leaf remote %q: %w", r.URL, err)
		}
		local := r.LocalAccount
		if local == "" {
			local = cfg.Identity.ServiceAccount()
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{
			URLs: []*url.URL{u}, Credentials: r.CredentialsFile, LocalAccount: local,
		})
	}
	if len(cfg.LeafRemotes) > 0 {
		opts.LeafNode.ReconnectInterval = 500 * time.Millisecond
	}
	return nil
}

// LeafURL is the URL where other deployments' servers connect to ns as
// leaf nodes (Config.LeafListen), or "" when it has no leaf listener.
func LeafURL(ns *server.Server) string {
	v, err := ns.Varz(nil)
	if err != nil || v.LeafNode.Port <= 0 {
		return ""
	}
	host := v.LeafNode.Host
	if host == "" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "nats-leaf://" + net.JoinHostPort(host, strconv.Itoa(v.LeafNode.Port))
}
