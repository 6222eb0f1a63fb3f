package cli

import (
	"context"
	"errors"
	"io"

	"github.com/urfave/cli/v2"
)

// Run runs pgtenant with args (without the program's name) as Main would,
// with stdin, stdout and stderr of the caller's choosing, and returns the
// exit code Main would exit with and the error it would print. It is for
// tests that drive the command line in-process (integration tests of
// commands that need a running proxy too).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	a := app()
	a.Reader, a.Writer, a.ErrWriter = stdin, stdout, stderr
	// Without this, cli would call os.Exit on an ExitCoder.
	a.ExitErrHandler = func(*cli.Context, error) {}
	err := a.RunContext(ctx, flagsFirst(a, append([]string{"pgtenant"}, args...)))
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ec):
		return ec.ExitCode(), err
	default:
		return exitUsage, err
	}
}
