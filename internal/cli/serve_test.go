package cli

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pgtenant/pgtenant/router"
)

// A privileged backend role is a setup the operator fixes, like a bad flag:
// it exits with the usage code, everything else with the runtime code.
func TestServeExitCode(t *testing.T) {
	privileged := fmt.Errorf("start: %w", &router.PrivilegedBackendError{Role: "app", Reasons: []string{"is a superuser"}})
	if got := serveExitCode(privileged); got != exitUsage {
		t.Errorf("exit code for a privileged backend role = %d, want %d", got, exitUsage)
	}
	if got := serveExitCode(errors.New("accept: use of closed network connection")); got != exitRuntime {
		t.Errorf("exit code for a runtime failure = %d, want %d", got, exitRuntime)
	}
}
