// Package temporalpg runs Temporal on PostgreSQL as an operator would, as
// separate processes, for the cluster proof (e2e/cluster) and for a person
// trying keyflow past one process (`go tool task cluster-temporal`).
//
// Start with [StartPostgres]: it initdb's a fresh PostgreSQL 15 cluster
// (Debian package postgresql) in a directory of its own and runs it on a
// free loopback port, with password authentication over TCP. PostgreSQL
// refuses to run as root, so as root it runs as the postgres system user.
//
// Then [StartTemporal]: it writes the certificates an operator would supply
// ([WriteCerts]: a CA, a server certificate for 127.0.0.1 and localhost, a
// client certificate), applies Temporal's schema with Temporal's own SQL
// tool (go.temporal.io/server/cmd/tools/sql, plugin postgres12), runs
// Temporal's own server binary (go.temporal.io/server/cmd/server) from a
// configuration file that requires mutual TLS on the frontend and between
// its services, and registers the namespace. Both binaries come from the
// pinned server module through the go.mod tool directives (`go tool -n`),
// so nothing is downloaded at run time.
//
// The server runs Temporal's production defaults: none of the dev stack's
// latency tuning (eager activities, a fast transfer queue, short long
// polls; deploy/devstack/temporal.go), so that keyflow's workflows are
// shown not to depend on it.
//
// Every process is a child of the caller and is killed if the caller dies
// (Linux's parent-death signal); Stop ends them and removes their files.
package temporalpg
