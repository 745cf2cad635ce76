package rpc_test

import (
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyflow/keyflow/client"
	"github.com/keyflow/keyflow/deploy/natsserver"
)

// Tests that send raw requests sign them as the keyflow client does: the
// creds of each connection are kept here, and signedRequest signs with
// them.
var connCreds sync.Map // *nats.Conn → creds

// connectSigned connects with creds and remembers them for signedRequest.
func connectSigned(ns *server.Server, creds []byte, name string) (*nats.Conn, error) {
	nc, err := natsserver.Connect(ns, creds, name)
	if err == nil {
		connCreds.Store(nc, creds)
	}
	return nc, err
}

// signedRequest signs msg with the creds nc connected with, when known,
// and sends it.
func signedRequest(nc *nats.Conn, msg *nats.Msg, timeout time.Duration) (*nats.Msg, error) {
	if creds, ok := connCreds.Load(nc); ok {
		if err := client.SignMsg(creds.([]byte), msg); err != nil {
			return nil, err
		}
	}
	return nc.RequestMsg(msg, timeout)
}
