package cli

import (
	"fmt"
	"regexp"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func init() {
	// cli's own --version flag, without its -v alias (-v reads as
	// "verbose" to many), printing versionLine.
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print pgtenant's version, commit and Go version", DisableDefaultText: true}
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, c.App.Version) }
}

// versionLine is what --version and the version command print: the
// module version ("(devel)" in a build from a checkout), the commit it was
// built from and whether the tree had changes, and the Go version.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "pgtenant (unknown version: built without module information)"
	}
	return formatVersion(bi)
}

// formatVersion is versionLine's text for bi.
func formatVersion(bi *debug.BuildInfo) string {
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	commit, modified := "unknown", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	return fmt.Sprintf("pgtenant %s (commit %s%s, %s)", version, commit, modified, bi.GoVersion)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print pgtenant's version, commit and Go version",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintln(c.App.Writer, c.App.Version)
			return err
		},
	}
}

// usageError is a command line cli could not parse: the one line saying
// why, and where the help is, instead of the help itself.
type usageError struct {
	err     error
	command string // "pgtenant tenant create"
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%s\nsee '%s --help'", explainUsage(e.err), e.command)
}

func (e *usageError) Unwrap() error { return e.err }
func (e *usageError) ExitCode() int { return exitUsage }

// oneLineUsageErrors makes every command of a, and a itself, answer a
// usage error (an unknown flag, a value that does not parse, from a flag or
// from a PGTENANT_* variable) with a usageError rather than print its whole
// help first.
func oneLineUsageErrors(a *cli.App) {
	a.OnUsageError = onUsageError(a.Name)
	if a.Action == nil {
		a.Action = unknownCommand(a.Name, cli.ShowAppHelp)
	}
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := path + " " + c.Name
			c.OnUsageError = onUsageError(p)
			if len(c.Subcommands) > 0 && c.Action == nil {
				c.Action = unknownCommand(p, cli.ShowSubcommandHelp)
			}
			walk(p, c.Subcommands)
		}
	}
	walk(a.Name, a.Commands)
}

// unknownCommand is the action of a command that only holds subcommands:
// alone it shows its help, as cli would; with a word that names none of
// them it is a usage error (cli said "No help topic" and exited 3).
func unknownCommand(command string, help func(*cli.Context) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() == 0 {
			return help(c)
		}
		return &usageError{err: fmt.Errorf("unknown command %q", c.Args().First()), command: command}
	}
}

func onUsageError(command string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		return &usageError{err: err, command: command}
	}
}

// envParseError is cli's message for a PGTENANT_* variable whose value
// does not parse as its flag's type.
var envParseError = regexp.MustCompile(`^could not parse ("[^"]*") as (\w+)(?: slice)? value from environment variable "(\w+)" for flag ([\w-]+): `)

// explainUsage rewords cli's message for a bad environment value, which
// names a Go function (strconv.ParseInt), as what the variable must hold.
func explainUsage(err error) string {
	m := envParseError.FindStringSubmatch(err.Error())
	if m == nil {
		return err.Error()
	}
	want := map[string]string{
		"int":      "a whole number",
		"int64":    "a whole number",
		"float64":  "a number",
		"duration": "a duration such as 30s, 5m or 1h",
		"bool":     "true or false",
	}[m[2]]
	if want == "" {
		return err.Error()
	}
	return fmt.Sprintf("%s=%s: --%s must be %s", m[3], m[1], m[4], want)
}
