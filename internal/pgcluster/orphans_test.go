package pgcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// orphanEnv makes the test binary, run as a child, start a cluster, print
// its directory and port, and exit without stopping it: a test process
// that crashed.
const orphanEnv = "PGTENANT_CLUSTER_TEST_ORPHAN"

func TestMain(m *testing.M) {
	if os.Getenv(orphanEnv) != "" {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		c, err := Start(ctx, Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s %d\n", c.Dir, c.Port)
		os.Exit(0) // no Stop: the cluster is left behind
	}
	os.Exit(m.Run())
}

// A cluster whose process died without stopping it is stopped and removed
// by the next Start; a cluster whose owner is alive is left alone.
func TestStartReapsOrphans(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var dir string
	var port int
	if _, err := fmt.Sscan(string(out), &dir, &port); err != nil || !strings.Contains(dir, dirPrefix) {
		t.Fatalf("child printed %q", out)
	}
	t.Cleanup(func() {
		// Should the reaper fail, do not leak the server in turn.
		c := &Cluster{Dir: dir, dataDir: filepath.Join(dir, "data"), run: mustRunner(t)}
		_ = c.stopServer(context.Background(), ShutdownImmediate)
		_ = os.RemoveAll(dir)
	})
	if !accepting(port) {
		t.Fatalf("the orphan's server on port %d is not running; the test proves nothing", port)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	live, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop()

	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("orphan directory %s still there (stat: %v)", dir, err)
	}
	if accepting(port) {
		t.Errorf("orphan server on port %d still accepts connections", port)
	}
	// This process owns live: another Start must not touch it.
	other, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Stop()
	if _, err := os.Stat(live.Dir); err != nil || !accepting(live.Port) {
		t.Errorf("a live process's cluster was reaped: stat %v, accepting %v", err, accepting(live.Port))
	}
}

func accepting(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func mustRunner(t *testing.T) *runner {
	r, err := newRunner(DefaultBinDir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
