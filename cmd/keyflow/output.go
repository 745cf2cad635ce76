package main

import (
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
	fmt.Fprintln(tw, "KEY ID\tALIAS\tSPEC\tSTATE\tPRIMARY\tVERSIONS\tCREATED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", k.KeyID, dash(k.Alias), k.KeySpec, k.KeyState, k.PrimaryVersion, len(k.Versions), k.CreationDate.Format(time.RFC3339))
	}
	return tw.Flush()
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
