package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pgbenchSpec is one pgbench process's run.
type pgbenchSpec struct {
	// workload is the arguments that say what runs: -S, -M mode, -C, -n.
	workload []string
	clients  int
	seconds  int
	// tenant names the tenant (pgtenant, PgBouncer: the database; direct:
	// the schema put on search_path).
	tenant string
	// logPrefix is --log-prefix: pgbench writes its per-transaction log
	// there (one file per thread).
	logPrefix string
}

// pgbenchResult is what one pgbench process reported.
type pgbenchResult struct {
	tps float64
	// processed is pgbench's "number of transactions actually processed"
	// (the many-tenants load: its own count).
	processed int64
	// txs are the sampled transactions, from pgbench's per-transaction log.
	txs []txRecord
	// failed counts transactions pgbench reported as failed (a run may
	// complete with some).
	failed int
	err    error
}

var (
	pgbenchTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	pgbenchFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	pgbenchProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	// pgbenchServerError finds the server's message in an aborted client's
	// line: "... aborted in command 1 query 0: ERROR:  prepared statement ...".
	pgbenchServerError = regexp.MustCompile(`(?:ERROR|FATAL):\s+(.*)$`)
)

// pgEnv is this process's environment without libpq's PG* variables (a
// PGHOST or PGDATABASE of the caller's must not redirect a run) and with
// what every target gets alike: no TLS negotiation on loopback, English
// messages.
func pgEnv() []string {
	env := make([]string, 0, len(os.Environ())+4)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PGSSLMODE=disable", "PGGSSENCMODE=disable", "PGCONNECT_TIMEOUT=15", "LC_ALL=C")
}

// pgbenchCommand is the pgbench invocation of spec against t.
func (e *env) pgbenchCommand(ctx context.Context, t *target, spec pgbenchSpec) *exec.Cmd {
	args := []string{
		"-h", t.host, "-p", strconv.Itoa(t.port), "-U", e.clientUser(t),
		"-c", strconv.Itoa(spec.clients), "-j", strconv.Itoa(min(2, spec.clients)),
		"-T", strconv.Itoa(spec.seconds),
		"-l", "--sampling-rate=" + strconv.FormatFloat(defaultSamplingRate, 'f', -1, 64),
		"--log-prefix=" + spec.logPrefix,
	}
	args = append(append(args, spec.workload...), t.database(spec.tenant))
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = pgEnv()
	if t.env != nil {
		cmd.Env = append(cmd.Env, t.env(spec.tenant)...)
	}
	return cmd
}

// clientUser is the user pgbench logs in as: the poolers take any (trust),
// PostgreSQL gets the target's own role so its backends can be told apart.
func (e *env) clientUser(t *target) string {
	if t.name == TargetDirect {
		return e.loginRole(roleDirect)
	}
	return clientUser
}

// runPgbench runs spec against t and reads its output and log.
func (e *env) runPgbench(ctx context.Context, t *target, spec pgbenchSpec) pgbenchResult {
	ctx, cancel := context.WithTimeout(ctx, timeFor(spec.seconds))
	defer cancel()
	out, err := e.pgbenchCommand(ctx, t, spec).CombinedOutput()
	res := pgbenchResult{}
	text := string(out)
	if m := pgbenchFailed.FindStringSubmatch(text); m != nil {
		res.failed = atoiOr(m[1], 0)
	}
	if err != nil || strings.Contains(text, "aborted") {
		res.err = pgbenchError(text, err)
		return res
	}
	m := pgbenchTPS.FindStringSubmatch(text)
	if m == nil {
		res.err = fmt.Errorf("no tps line in pgbench output: %s", lastLine(text))
		return res
	}
	res.tps, _ = strconv.ParseFloat(m[1], 64)
	if m := pgbenchProcessed.FindStringSubmatch(text); m != nil {
		res.processed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	res.txs, res.err = readLog(spec.logPrefix)
	return res
}

// pgbenchError turns a failed run's output into one line a reader can act
// on: the server's error when a client was aborted by one.
func pgbenchError(out string, runErr error) error {
	for _, line := range strings.Split(out, "\n") {
		if m := pgbenchServerError.FindStringSubmatch(line); m != nil {
			return errors.New(strings.TrimSpace(m[1]))
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "error") || strings.Contains(line, "aborted") {
			return errors.New(strings.TrimSpace(strings.TrimPrefix(line, "pgbench: ")))
		}
	}
	if runErr == nil {
		runErr = errors.New("a client aborted")
	}
	return fmt.Errorf("pgbench: %w: %s", runErr, lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// timeFor bounds a pgbench process that runs for seconds.
func timeFor(seconds int) time.Duration {
	return time.Duration(seconds)*time.Second + runSlack
}

// txRecord is one logged transaction.
type txRecord struct {
	// end is when it completed, in seconds since the epoch.
	end float64
	// latencyUS is its latency in µs.
	latencyUS float64
}

// readLog reads every per-transaction log file pgbench wrote under prefix
// (prefix.PID, prefix.PID.THREAD) and removes them. A line is "client_id
// transaction_no time script_no time_epoch time_us [...]", time being the
// latency in µs (or "failed"/"skipped", which are left out) and
// time_epoch.time_us when the transaction completed.
func readLog(prefix string) ([]txRecord, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return nil, err
	}
	var txs []txRecord
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 6 {
				continue
			}
			lat, err1 := strconv.ParseFloat(fields[2], 64)
			sec, err2 := strconv.ParseInt(fields[4], 10, 64)
			us, err3 := strconv.ParseInt(fields[5], 10, 64)
			if err1 == nil && err2 == nil && err3 == nil {
				txs = append(txs, txRecord{end: float64(sec) + float64(us)/1e6, latencyUS: lat})
			}
		}
		err = sc.Err()
		fh.Close()
		os.Remove(f)
		if err != nil {
			return nil, err
		}
	}
	return txs, nil
}

// latencies returns the records' latencies in µs.
func latencies(txs []txRecord) []float64 {
	out := make([]float64, len(txs))
	for i, t := range txs {
		out[i] = t.latencyUS
	}
	return out
}

// percentile returns the p-th percentile (0 < p ≤ 100) of xs, nearest rank;
// NaN for none. xs is sorted in place.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	rank := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[min(max(rank, 0), len(xs)-1)]
}
