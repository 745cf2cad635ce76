package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Reading what commands take: --in or stdin, --context pairs, base64.

// readInput reads --in FILE, or stdin.
func readInput(cmd *cobra.Command, in string, limit int64) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if in != "" && in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return nil, usagef("cannot read --in: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read input: %w", err)
	}
	return b, nil
}

// parseContext turns repeated --context k=v into an encryption context.
func parseContext(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("--context wants key=value, got %q", p)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("--context key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

func decodeBase64Input(b []byte) ([]byte, error) {
	s := strings.Join(strings.Fields(string(b)), "")
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, usagef("input is not valid base64")
	}
	return out, nil
}

func decodeFlagB64(name, v string) ([]byte, error) {
	if v == "" {
		return nil, usagef("--%s is required", name)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, usagef("--%s is not valid base64", name)
	}
	return b, nil
}
