package cli

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// flagsFirst moves the flags a person wrote after a command's arguments in
// front of them: `pgtenant tenant create acme --backend DSN` reads as
// `pgtenant tenant create --backend DSN acme`. urfave/cli stops reading
// flags at the first argument, so without this the flag would be taken for
// a second argument. It walks the command tree to know which words are
// commands and which flags take a value; after "--" nothing moves.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	commands := app.Commands
	var flags []cli.Flag
	rest := args[1:]
	// The command path: leading words that name (sub)commands.
	for len(rest) > 0 {
		cmd := findCommand(commands, rest[0])
		if cmd == nil {
			break
		}
		out = append(out, rest[0])
		commands, flags = cmd.Subcommands, cmd.Flags
		rest = rest[1:]
	}
	var moved, positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			positional = append(positional, rest[i:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			moved = append(moved, a)
			if !strings.Contains(a, "=") && takesValue(flags, strings.TrimLeft(a, "-")) && i+1 < len(rest) {
				i++
				moved = append(moved, rest[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(append(out, moved...), positional...)
}

func findCommand(commands []*cli.Command, name string) *cli.Command {
	for _, c := range commands {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag called name reads the next word as
// its value: every flag but a boolean one.
func takesValue(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				// TakesValue is false for boolean flags, the
				// config package's altsrc wrappers included, which are
				// not *cli.BoolFlag themselves.
				if tv, ok := f.(interface{ TakesValue() bool }); ok {
					return tv.TakesValue()
				}
				_, isBool := f.(*cli.BoolFlag)
				return !isBool
			}
		}
	}
	return true // unknown: cli will say so; keep its value next to it
}
