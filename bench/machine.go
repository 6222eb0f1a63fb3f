package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// machineInfo describes the machine and the software versions measured.
func machineInfo(ctx context.Context, e *env) Machine {
	m := Machine{
		CPU:       procField("/proc/cpuinfo", "model name"),
		Cores:     runtime.NumCPU(),
		Kernel:    strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		OS:        strings.Trim(procField("/etc/os-release", "PRETTY_NAME"), `"`),
		PgBouncer: pgbouncerVersion(e.pgbouncerBin),
		Go:        runtime.Version(),
	}
	if m.CPU == "" {
		m.CPU = runtime.GOARCH
	}
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		n, _ := strconv.ParseInt(strings.TrimSuffix(kb, " kB"), 10, 64)
		m.MemoryMiB = n / 1024
	}
	var v string
	if err := e.admin.QueryRow(ctx, "SHOW server_version").Scan(&v); err == nil {
		m.PostgreSQL = "PostgreSQL " + strings.Fields(v)[0]
	}
	if out, err := exec.CommandContext(ctx, "pgbench", "--version").Output(); err == nil {
		// "pgbench (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
		if f := strings.Fields(string(out)); len(f) >= 3 {
			m.Pgbench = "pgbench " + f[2]
		}
	}
	return m
}

// procField returns the value of the first "key: value" or "key=value"
// line for key in a /proc-style file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			k, v, ok = strings.Cut(line, "=")
		}
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}
