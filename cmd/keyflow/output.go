package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/keyflow/keyflow/client/api"
	"github.com/spf13/cobra"
)

// Printing results: JSON (the default) or a table or text for -o table,
// and the files commands write.

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// print writes v as JSON, or text for --output table.
func (g *globals) print(cmd *cobra.Command, v any, text string) error {
	if g.output == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), text)
	return err
}

// rawOutput marks a command that has a raw form (-o raw): the bare
// base64, PEM or bytes a pipe wants. Other commands refuse -o raw.
const rawOutput = "keyflow.raw-output"

func withRaw(c *cobra.Command) *cobra.Command {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[rawOutput] = "yes"
	return c
}

// printObj prints v as JSON, or as a FIELD VALUE table for -o table.
func (g *globals) printObj(cmd *cobra.Command, v any) error {
	if g.output == "table" {
		return printFields(cmd.OutOrStdout(), v)
	}
	return printJSON(cmd.OutOrStdout(), v)
}

// printResult prints a request's result v: JSON (the default), a FIELD
// VALUE table (-o table), or its raw form (-o raw) written by raw.
func (g *globals) printResult(cmd *cobra.Command, v any, raw func(w io.Writer) error) error {
	switch g.output {
	case "raw":
		return raw(cmd.OutOrStdout())
	case "table":
		return printFields(cmd.OutOrStdout(), v)
	}
	return printJSON(cmd.OutOrStdout(), v)
}

// printFields prints the top-level fields of v's JSON object as a FIELD
// VALUE table, in the JSON's order; nested values stay compact JSON.
func printFields(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return printJSON(w, v) // not an object
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FIELD\tVALUE")
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return err
		}
		var str string
		if json.Unmarshal(val, &str) == nil {
			fmt.Fprintf(tw, "%s\t%s\n", k, str)
		} else {
			fmt.Fprintf(tw, "%s\t%s\n", k, val)
		}
	}
	return tw.Flush()
}

func b64Writer(b []byte) func(w io.Writer) error {
	return func(w io.Writer) error {
		_, err := fmt.Fprintln(w, base64.StdEncoding.EncodeToString(b))
		return err
	}
}

func bytesWriter(b []byte) func(w io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}

func validWriter(version uint32) func(w io.Writer) error {
	return func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "valid (key version %d)\n", version)
		return err
	}
}

func printB64(cmd *cobra.Command, b []byte) error {
	_, err := fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(b))
	return err
}

func (g *globals) printKeys(w io.Writer, keys ...api.KeyMetadata) error {
	if g.output == "json" {
		if len(keys) == 1 {
			return printJSON(w, keys[0])
		}
		return printJSON(w, api.ListKeysReply{Keys: keys})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tSTATE\tPRIMARY\tVERSIONS\tROTATION\tCRYPTOPERIOD\tCREATED")
	for _, k := range keys {
		state := k.KeyState
		if k.PendingDeletion {
			state += ", PENDING DELETION"
			if k.DeletionDate != nil {
				state += " " + k.DeletionDate.Format(time.RFC3339)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, state, k.PrimaryVersion, len(k.Versions),
			days(k.RotationPeriodInDays), days(k.CryptoperiodInDays), k.CreationDate.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(keys) == 1 {
		if err := printRegions(w, keys[0]); err != nil {
			return err
		}
		return printClouds(w, keys[0])
	}
	return nil
}

// days prints a period in days, "-" for none.
func days(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%dd", n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// writeCreds writes a creds file (0600, refusing to overwrite), or prints
// it to stdout when out is "" or "-".
func writeCreds(w io.Writer, out string, creds []byte) error {
	if out == "" || out == "-" {
		_, err := w.Write(creds)
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return usagef("cannot write --out: %v", err)
	}
	if _, err := f.Write(creds); err != nil {
		f.Close()
		return fmt.Errorf("failed to write creds: %w", err)
	}
	return f.Close()
}

// showProgress redraws line() on stderr every half second while a long
// command runs, only when stderr is a terminal: scripts and logs get no
// progress noise. stop clears the line.
func showProgress(cmd *cobra.Command, line func(elapsed time.Duration) string) (stop func()) {
	w := cmd.ErrOrStderr()
	if !isTerminal(w) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprintf(w, "\r\033[K%s", line(time.Since(start).Round(time.Second)))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// waiting is the progress of a single long request.
func waiting(what string) func(time.Duration) string {
	return func(d time.Duration) string { return fmt.Sprintf("%s ... %v", what, d) }
}
