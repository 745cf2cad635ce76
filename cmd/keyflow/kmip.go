package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/workers/kmip"
)

func newKMIPCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kmip",
		Short: "KMIP clients: certificates that map to keyflow principals",
		Long: `keyflow serves KMIP 1.0-1.4 over mutual TLS (keyflow dev --kmip-listen).
A client certificate names its keyflow identity: Organization = tenant,
CommonName = principal; the principal's roles come from keyflow's identity
directory, so create it first (keyflow principal create). See docs/kmip.md.`,
	}
	client := &cobra.Command{Use: "client", Short: "Issue KMIP client certificates"}
	var principal, tenant, out string
	var exportDefault bool
	add := &cobra.Command{
		Use:   "add NAME --principal P",
		Short: "Issue a client certificate for principal P from the dev CA (DIR/kmip/ca)",
		Long: `Issue a client certificate for principal P of tenant T (default: the dev
tenant), signed by the dev stack's KMIP CA under DIR/kmip/ca (created on
first use). It writes NAME-cert.pem, NAME-key.pem (0600) and NAME.pem (both,
for MongoDB's --kmipClientCertificateFile) to --out (default
DIR/kmip/clients). The server checks the principal in the identity
directory at every connection: an unknown or disabled principal is refused.
--export-by-default marks the certificate (OU keyflow-export-by-default) so
that every key the client creates or registers is exportable.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if principal == "" {
				return usagef("--principal is required")
			}
			dir := devKMIPDir(g.dataDir)
			ca, err := kmip.LoadOrCreateCA(filepath.Join(dir, "ca"))
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(dir, "clients")
			}
			cert, key, err := ca.IssueClient(out, args[0], tenant, principal, exportDefault)
			if err != nil {
				return err
			}
			pem := filepath.Join(out, args[0]+".pem")
			if g.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]string{"name": args[0], "tenant": tenant, "principal": principal,
					"cert": cert, "key": key, "pem": pem, "ca": ca.CertPath()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s for %s/%s\ncert=%s\nkey=%s\npem=%s\nca=%s\n", args[0], tenant, principal, cert, key, pem, ca.CertPath())
			return nil
		},
	}
	add.Flags().StringVar(&principal, "principal", "", "the keyflow principal the certificate stands for")
	add.Flags().StringVar(&tenant, "tenant", devTenant, "the principal's tenant")
	add.Flags().BoolVar(&exportDefault, "export-by-default", false, "make every key this client creates or registers exportable (for clients that cannot ask, e.g. pg_tde); the principal still needs the kmip.exportable row")
	add.Flags().StringVar(&out, "out", "", "directory for the certificate and key (default DIR/kmip/clients)")
	client.AddCommand(add)
	cmd.AddCommand(client)
	return cmd
}
