// Package main is the keyflow command, keyflow's single binary: `keyflow dev` runs the whole
// stack in one process, `keyflow serve` runs a set of roles against an
// external NATS, Temporal and HSM, and every other command is a client of a running
// stack over NATS (through keyflow's Go client), as the principal of --creds
// (default: the dev stack's admin creds in --data-dir).
//
// Exit codes: 0 success; 1 keyflow refused the request (the stable error
// code is printed); 2 bad usage; 3 keyflow could not be reached; 4 the
// operation waits for approval (dual control: the approval ID is printed);
// 5 a workflow outlived the call (key rotate: still running); 6-9 the creds file: none found, unreadable, not a principal's creds,
// refused by the NATS server (creds.go).
//
// # Verbs and nouns
//
// The command tree follows one written rule, so a new command has one
// obvious place:
//
//   - A top-level verb is one request on data or on a key's material, as
//     the AWS CLI's operations are (`aws kms encrypt`): its input comes from
//     stdin, --in or files, its result goes to stdout or files, and the key
//     is a flag or argument. encrypt, decrypt, reencrypt, sign, verify, mac,
//     verify-mac, get-public-key, random, datakey, datakey-pair, rewrap,
//     seal, open, encapsulate, decapsulate, and the BYOK transfer of key
//     material: import-params, import, delete-imported-material. These are
//     the commands applications and scripts call in a pipe, so they are
//     short.
//   - A noun group is a thing with a life of its own that is created,
//     listed, changed or ended: `keyflow NOUN VERB`. key, grant, approval,
//     audit, backup, archive, root (the root key), migrate (a migration
//     campaign), tenant, principal, access-key (the AWS KMS API's
//     credentials), kmip (KMIP client certificates), config (serve's
//     configuration file), operator (the NATS operator ceremony of a
//     cluster, offline), cloud (cloud KMS destinations). Operations on one key's life (rotate,
//     disable, schedule-deletion, set-policy, retire-version) are verbs of
//     the key group, not top-level verbs, even where AWS names them as
//     operations.
//   - A verb may carry the small noun group of what it leaves behind:
//     `datakey register|get|list|deregister` (the data-key registry) and
//     `rewrap status` (the rewrap workflow a rotation starts).
//   - Four exceptions run no request on a key: `dev` runs the stack,
//     `serve` runs roles of it, `bootstrap` creates its streams and
//     buckets, and `inventory` is a one-shot read-only report (its
//     follow-up, `migrate plan`, is in the migrate group).
//
// # Files
//
// One file per command group, named after it; a large group adds files
// with its name as prefix. Areas that have the same stem in every layer
// (api, client, rpc, cmd) keep it here too.
//
//	root.go           the cobra root: global flags and the command tree
//	main.go           exit codes and the error report
//	client.go         dial, withClient, withTenantClient, withBlob
//	creds.go          which creds file, and what is wrong with it
//	input.go          --in/stdin, --context pairs, base64 input
//	output.go         JSON, tables, -o raw, progress on terminals, files written
//	crypto.go         encrypt ... random (the single-request verbs)
//	datakeys.go       datakey, datakey-pair, the data-key registry
//	rewrap.go         rewrap, rewrap status
//	pq.go             seal, open, encapsulate, decapsulate
//	imports.go        import-params, import, delete-imported-material (BYOK)
//	inventory.go      inventory
//	dev.go            dev
//	devdata.go        the dev data directory for root and kmip (dev.go and devdata.go are
//	                  the only importers of deploy/devstack: the default build)
//	nodev.go          -tags nodev, the production build: dev refuses, no Temporal server
//	serve.go          serve, and the --log-level/--log-format flags dev shares
//	bootstrap.go      bootstrap
//	config.go         config check|example
//	key.go            key create|describe|list|rotate|retire-version
//	keylifecycle.go   key state changes, deletion, compromise, rotation period
//	keypolicy.go      key set-policy|get-policy
//	keyalias.go       key alias create|update|delete|list
//	grant.go          grant
//	approval.go       approval (dual control)
//	audit.go          audit tail; auditforward.go and auditverify.go the rest
//	backup.go         backup
//	archive.go        archive
//	rootkey.go        root (the root-key ceremony, offline)
//	migrate.go        migrate (plan, and the campaign)
//	tenant.go         tenant, tenant policy
//	principal.go      principal
//	accesskey.go      access-key (SigV4 credentials of the AWS KMS API)
//	kmip.go           kmip client add (KMIP client certificates, offline)
//	operator.go       operator init (the NATS operator ceremony, offline)
//	cloud.go          cloud add|list|status|remove, key distribute|undistribute
//
// # Writing a command
//
// A command validates its flags first and returns usagef errors (exit 2)
// before it connects. It then runs its request inside g.withClient (or
// g.withBlob when it sends a base64 blob from stdin, g.withTenantClient when
// it takes --tenant), and prints JSON by default or a table with -o table
// (g.printObj, or printFields for any object). A crypto verb with a bare
// form for pipes (base64, PEM, bytes) prints it with -o raw (printResult;
// root.go marks it withRaw); other commands refuse -o raw. A command that
// waits shows progress on stderr only when it is a terminal (showProgress).
// It wipes plaintext and secrets it holds (clear) once printed.
package main
