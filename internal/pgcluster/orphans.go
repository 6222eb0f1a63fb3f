package pgcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A test binary that crashes (a panic in a goroutine ends the process
// without running TestMain's cleanup) or is killed leaves its throwaway
// server running and its directory behind, and pg_ctl daemonises the
// postmaster, so nothing stops it. Every cluster therefore records which
// process owns it, and Start first stops and removes the clusters whose
// owner is gone.

// ownerFile, in Cluster.Dir, holds the pid of the process that started it.
const ownerFile = "owner.pid"

// dirPrefix names the clusters' directories in the temporary directory.
const dirPrefix = "pgtenant-pg-"

func writeOwner(dir string) error {
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// reapOrphans stops and removes the clusters under tmp whose owner process
// no longer exists. A directory without an owner file (being created right
// now, or made before owners were recorded) is left alone, as is one whose
// owner is alive or cannot be checked: it is better to leak than to stop
// another process's server. Errors are not returned: a leftover that
// cannot be cleaned must not stop a new cluster from starting.
func reapOrphans(ctx context.Context, run *runner, tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 || processExists(pid) {
			continue
		}
		c := &Cluster{Dir: dir, dataDir: filepath.Join(dir, "data"), run: run}
		if err := c.stopServer(ctx, ShutdownImmediate); err != nil {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}

// processExists reports whether pid names a live process. EPERM means it
// exists but belongs to someone else.
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
