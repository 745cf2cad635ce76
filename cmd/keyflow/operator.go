package main

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/keyflow/keyflow/workers/natsauth"
)

func newOperatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "The NATS operator ceremony of a cluster deployment",
	}
	var name, resolverDir string
	var tenants []string
	initCmd := &cobra.Command{
		Use:   "init DIR [--tenant default]",
		Short: "Create the NATS operator, accounts, server configuration stanza and the control plane's identity file",
		Long: `Run once per deployment, on a machine the operator trusts. It writes into DIR:

  offline/operator.nk         the operator's identity key: move it offline
  offline/*-account.nk        the system and keyflow accounts' identity keys: offline
  operator.jwt                the operator JWT
  nats-operator.conf          the stanza every nats-server includes: operator,
                              system_account, the full account resolver and the
                              preloaded system, keyflow and --tenant accounts
  identity.json               nats.identity_file of keyflow serve (crypto, admin):
                              signing keys only, never the operator's key
  creds/worker.creds          keyflow's roles: worker (crypto, admin, lifecycle,
  creds/sealer.creds          gateway), sealer, operator (keyflow bootstrap) and
  creds/operator.creds        auditor (audit verify)
  creds/auditor.creds
  creds/TENANT-admin.creds    an admin principal of each --tenant

Tenants created later (keyflow tenant create) are pushed by the control plane
through the system account to every server's full resolver. The ceremony is
described in docs/operator-ceremony.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := natsauth.InitOperator(natsauth.OperatorInit{Dir: args[0], Name: name, ResolverDir: resolverDir, Tenants: tenants})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "offline keys   %s (move them offline)\n", files.OfflineDir)
			fmt.Fprintf(w, "operator JWT   %s\n", files.OperatorJWT)
			fmt.Fprintf(w, "server stanza  %s (include it from every nats-server)\n", files.ServerConf)
			fmt.Fprintf(w, "identity       %s (nats.identity_file of the crypto and admin roles)\n", files.Identity)
			roles := make([]string, 0, len(files.Creds))
			for r := range files.Creds {
				roles = append(roles, r)
			}
			sort.Strings(roles)
			for _, r := range roles {
				fmt.Fprintf(w, "creds %-8s %s\n", r, files.Creds[r])
			}
			return nil
		},
	}
	initCmd.Flags().StringVar(&name, "name", "keyflow", "the operator's name")
	initCmd.Flags().StringVar(&resolverDir, "resolver-dir", "jwt", "directory of each server's full account resolver, as written into the stanza (relative to the server's working directory)")
	initCmd.Flags().StringSliceVar(&tenants, "tenant", []string{"default"}, "tenants to create now, each with an admin principal (the first is the platform tenant)")
	cmd.AddCommand(initCmd)
	return cmd
}
