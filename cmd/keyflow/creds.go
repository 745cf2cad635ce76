package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/jwt/v2"
)

// Finding and checking the creds file a command runs as. Each way it can
// be wrong has its own stable code and exit code, so "the server is
// unreachable" only ever means that.

// credsFile is the creds file of the principal, and where its path came
// from (for messages).
type credsFile struct {
	path, from string
}

// credsError is a problem with the creds file, found locally or by the
// NATS server.
type credsError struct {
	code string
	exit int
	msg  string
}

func (e *credsError) Error() string { return e.code + ": " + e.msg }

// principalCreds picks the creds file: --creds, else KEYFLOW_CREDS, else
// the dev stack's DIR/admin.creds.
func (g *globals) principalCreds() (credsFile, error) {
	switch {
	case g.credsFlag:
		return credsFile{g.creds, "--creds"}, nil
	case g.creds != "":
		return credsFile{g.creds, "KEYFLOW_CREDS"}, nil
	}
	def := filepath.Join(g.dataDir, "admin.creds")
	if _, err := os.Stat(def); errors.Is(err, fs.ErrNotExist) {
		abs, _ := filepath.Abs(def)
		return credsFile{}, &credsError{code: "NoCredentials", exit: exitNoCreds,
			msg: fmt.Sprintf("no creds: no --creds, no KEYFLOW_CREDS, and no dev stack creds at %s; "+
				"run in the folder where `keyflow dev` runs, or set --data-dir/KEYFLOW_DATA_DIR, or --creds/KEYFLOW_CREDS", abs)}
	}
	return credsFile{def, "the dev stack's admin creds"}, nil
}

// credsTenant reads the creds file and returns the keyflow tenant its user
// JWT names (the "keyflow_tenant" tag).
func credsTenant(c credsFile) (string, error) {
	b, err := os.ReadFile(c.path)
	if err != nil {
		return "", &credsError{code: "CredentialsUnreadable", exit: exitCredsUnreadable,
			msg: fmt.Sprintf("cannot read the creds file %s (%s): %v", c.path, c.from, unwrapPathError(err))}
	}
	notCreds := &credsError{code: "InvalidCredentials", exit: exitCredsInvalid,
		msg: fmt.Sprintf("%s (%s) is not a NATS creds file (a user JWT and its seed, as `tenant create` and `principal create` write)", c.path, c.from)}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", notCreds
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", notCreds
	}
	for _, t := range uc.Tags {
		if v, ok := strings.CutPrefix(t, "keyflow_tenant:"); ok {
			return v, nil
		}
	}
	return "", &credsError{code: "InvalidCredentials", exit: exitCredsInvalid,
		msg: fmt.Sprintf("%s (%s) names no keyflow tenant: it is not a principal's creds "+
			"(auditor.creds is keyflow's own account, for audit forward, verify and export only)", c.path, c.from)}
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkAuditorCreds checks that the auditor creds file (--auditor-creds,
// default DIR/auditor.creds) can be read.
func checkAuditorCreds(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &credsError{code: "NoCredentials", exit: exitNoCreds,
			msg: fmt.Sprintf("no auditor creds at %s: run in the folder where `keyflow dev` runs, or pass --auditor-creds (KEYFLOW_AUDITOR_CREDS)", path)}
	case err != nil:
		return &credsError{code: "CredentialsUnreadable", exit: exitCredsUnreadable,
			msg: fmt.Sprintf("cannot read the auditor creds %s: %v", path, unwrapPathError(err))}
	}
	return f.Close()
}
