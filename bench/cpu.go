package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat. It is
// sysconf(_SC_CLK_TCK), which is 100 on every Linux that Go runs on (the
// kernel's USER_HZ, fixed in its ABI whatever HZ it was built with).
const clockTick = 10 * time.Millisecond

// processCPU is the CPU time (user + system) pid has used so far, all its
// threads together, from the kernel's own counters. Its resolution is one
// clock tick (10 ms): a run of seconds of a busy pooler uses hundreds of
// them.
func processCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	return parseStatCPU(string(data))
}

// parseStatCPU reads utime and stime (fields 14 and 15) out of a
// /proc/PID/stat line. The second field, the command name in parentheses,
// may hold spaces and parentheses itself, so fields are counted from the
// last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu: malformed stat line %.40q", stat)
	}
	// After ") " comes field 3 (state); utime is field 14, 11 further on.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu: short stat line %.40q", stat)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu: malformed utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// cpuMeter measures the CPU a process spends between its start and the
// call of the function it returns. pid 0 (a target whose process the
// harness does not know) measures nothing: the function returns 0 and
// false.
func cpuMeter(pid int) (stop func() (time.Duration, bool)) {
	if pid <= 0 {
		return func() (time.Duration, bool) { return 0, false }
	}
	before, err := processCPU(pid)
	if err != nil {
		return func() (time.Duration, bool) { return 0, false }
	}
	return func() (time.Duration, bool) {
		after, err := processCPU(pid)
		if err != nil || after < before {
			return 0, false
		}
		return after - before, true
	}
}

// cpuPerTx is the CPU a run used per transaction, in microseconds.
func cpuPerTx(cpu time.Duration, txs int64) float64 {
	if txs <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(txs)
}

// profile starts a CPU profile for a run against t when t is this
// process's pgtenant and Options.CPUProfile is set, and returns what stops
// it. Runs against other targets are left out: the harness's own work
// while PgBouncer serves would only blur pgtenant's profile. Each run
// writes a file of its own, CPUProfile.N (pprof.StartCPUProfile cannot
// add to a profile); `go tool pprof FILE.*` reads them as one.
func (e *env) profile(t *target) (stop func()) {
	if e.o.CPUProfile == "" || t.cpuPID() != os.Getpid() {
		return func() {}
	}
	e.profiles++
	f, err := os.Create(fmt.Sprintf("%s.%d", e.o.CPUProfile, e.profiles))
	if err != nil {
		e.progress("cpuprofile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		e.progress("cpuprofile: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
