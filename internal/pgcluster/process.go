package pgcluster

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// commandWaitDelay bounds how long a server command's Wait lingers after its
// context is cancelled or it exits with its output still held open.
const commandWaitDelay = 2 * time.Second

// serverBinaries are the programs Start and Stop run from the bin directory.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// checkBinaries reports, wrapping ErrNotInstalled, the first server binary
// missing from binDir.
func checkBinaries(binDir string) error {
	for _, name := range serverBinaries {
		path := filepath.Join(binDir, name)
		info, err := os.Stat(path)
		if err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			continue
		}
		return fmt.Errorf("cluster: %w: %s is missing or not executable; install PostgreSQL 15 "+
			"(apt-get install -y postgresql, or run scripts/deps.sh), or set %s to the directory holding initdb, pg_ctl and postgres",
			ErrNotInstalled, path, BinDirEnv)
	}
	return nil
}

// runner runs the server binaries. PostgreSQL refuses to run as root, so when
// this process is root the binaries run as the unprivileged superuser OS user
// through runuser, and the files they write must belong to that user.
type runner struct {
	binDir string
	// runuser is the path of runuser when this process is root, else "".
	runuser  string
	uid, gid int
}

func newRunner(binDir string) (*runner, error) {
	r := &runner{binDir: binDir}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("cluster: running as root, so the server must run as the OS user %q, "+
			"which the postgresql package creates (apt-get install -y postgresql): %w", superuser, err)
	}
	if r.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, fmt.Errorf("cluster: uid of OS user %q: %w", superuser, err)
	}
	if r.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, fmt.Errorf("cluster: gid of OS user %q: %w", superuser, err)
	}
	if r.runuser, err = exec.LookPath("runuser"); err != nil {
		return nil, fmt.Errorf("cluster: running as root needs runuser (util-linux) to drop to OS user %q: %w", superuser, err)
	}
	return r, nil
}

// command returns a command running the server binary name with args, in
// directory dir, as the right OS user.
func (r *runner) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	bin := filepath.Join(r.binDir, name)
	var cmd *exec.Cmd
	if r.runuser != "" {
		cmd = exec.CommandContext(ctx, r.runuser, append([]string{"-u", superuser, "--", bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	// dir is the cluster's own directory: the server user can always enter
	// it, which is not true of the caller's working directory when root.
	cmd.Dir = dir
	cmd.Env = serverEnv()
	cmd.WaitDelay = commandWaitDelay
	return cmd
}

// chown hands dir and everything under it to the server user when this
// process is root; otherwise the files already belong to the right user.
func (r *runner) chown(dir string) error {
	if r.runuser == "" {
		return nil
	}
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, r.uid, r.gid)
	})
	if err != nil {
		return fmt.Errorf("cluster: give %s to OS user %q: %w", dir, superuser, err)
	}
	return nil
}

// serverEnv is this process's environment without PG* variables, which would
// otherwise reach the server and its tools (PGPORT sets the postmaster's
// default port, PGDATA pg_ctl's data directory), and with the C locale so
// that messages are in English and can be matched.
func serverEnv() []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}
