package cli

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// `pgtenant user`: which tenants a user is granted (read from the registry
// that `tenant grant` writes), and the auth-file line for a password.

func userCommand() *cli.Command {
	return &cli.Command{
		Name:  "user",
		Usage: "show which tenants users are granted (see `tenant grant`)",
		Subcommands: []*cli.Command{
			adminCommand("list", "list each user with a grant and its tenants (* = every tenant)", "", userList),
			adminCommand("show", "list the tenants USER is granted, and since when", "USER", userShow),
			{
				Name: "secret",
				Usage: "read USER's password from standard input and print its --auth-file line, " +
					"with a SCRAM-SHA-256 verifier as PostgreSQL stores it (the password itself is not kept)",
				ArgsUsage: "USER",
				Action:    userSecret,
			},
		},
	}
}

func userList(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit("usage: pgtenant user list [--backend DSN]", exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		grants, err := router.ListGrants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		// ListGrants orders by user, * first: consecutive rows make a user.
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "USER\tTENANTS")
		for i := 0; i < len(grants); {
			user := grants[i].User
			var tenants []string
			for ; i < len(grants) && grants[i].User == user; i++ {
				tenants = append(tenants, grants[i].Tenant)
			}
			fmt.Fprintf(w, "%s\t%s\n", user, strings.Join(tenants, ","))
		}
		return w.Flush()
	})
}

func userShow(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant user show [--backend DSN] USER", exitUsage)
	}
	user := c.Args().First()
	if err := router.ValidateUserName(user); err != nil {
		return cli.Exit(err, exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		grants, err := router.ListGrants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		n := 0
		for _, g := range grants {
			if g.User != user {
				continue
			}
			if n == 0 {
				fmt.Fprintln(w, "TENANT\tGRANTED AT")
			}
			n++
			fmt.Fprintf(w, "%s\t%s\n", g.Tenant, g.GrantedAt.UTC().Format(time.RFC3339))
		}
		if n == 0 {
			fmt.Fprintf(c.App.Writer, "user %s is granted no tenant\n", user)
			return nil
		}
		return w.Flush()
	})
}

// userSecret prints a userlist line for USER with a SCRAM verifier of the
// password read from standard input (one line; the newline is not part of
// it), so that an auth file never has to hold a password.
func userSecret(c *cli.Context) error {
	if c.NArg() != 1 || c.Args().First() == "" {
		return cli.Exit("usage: pgtenant user secret USER < password-file", exitUsage)
	}
	password, err := bufio.NewReader(c.App.Reader).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return cli.Exit(fmt.Errorf("read password: %w", err), exitRuntime)
	}
	password = strings.TrimSuffix(strings.TrimSuffix(password, "\n"), "\r")
	if password == "" {
		return cli.Exit("empty password on standard input", exitUsage)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	v, err := auth.NewSCRAMVerifier(password, salt, auth.DefaultIterations)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	fmt.Fprintf(c.App.Writer, "%s %s\n", quote(c.Args().First()), quote(v.String()))
	return nil
}
