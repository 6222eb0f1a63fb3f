package proxy

// The admin console, as PgBouncer has one: a client that connects to
// database pgtenant (router.ConsoleDatabase) as one of --admin-users, once
// authenticated like any client, talks to pgtenant itself. It sends
// commands as simple-protocol queries (SHOW TENANTS, PAUSE acme, ...) and
// reads ordinary result sets, so psql and any driver can. The session is
// no tenant's: it has no tenant entry (te stays nil), never asks for a
// backend, and does not count toward max-client-conn, so an operator can
// get in when pgtenant is full.

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/internal/pgerr"
	"github.com/pgtenant/pgtenant/router"
)

// Version is pgtenant's version as SHOW VERSION reports it; the build may
// set it (-ldflags -X). Empty: the module version from the build info.
var Version = ""

func version() string {
	v := Version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return v
}

// consoleOff refuses database pgtenant when no admin users are configured.
func consoleOff() *pgError {
	return &pgError{Severity: "FATAL", Code: codeInvalidAuthorization,
		Message: "the pgtenant admin console is off",
		Hint:    "Start pgtenant with --admin-users to let those users connect to database " + router.ConsoleDatabase + "."}
}

// killedError is what a client ended by KILL or KILL_CLIENT is told:
// PostgreSQL's words and SQLSTATE for pg_terminate_backend.
func killedError() *pgError {
	return fatalf(codeAdminShutdown, "terminating connection due to administrator command")
}

// errKilled ends the client goroutine of a killed client (endKilled).
var errKilled = errors.New("terminated by the administrator")

// startConsole admits an authenticated client of database pgtenant to the
// console if its user is an admin user, and greets it.
func (s *session) startConsole() error {
	if !slices.Contains(s.srv.liveConfig().AdminUsers, s.user) {
		return fatalf(codeInvalidAuthorization, "user %q may not use the pgtenant admin console", s.user)
	}
	s.admitted()
	s.console = true
	s.mu.Lock()
	s.srv.assignKey(s)
	s.greeting = true
	s.mu.Unlock()

	var b []byte
	for _, p := range [][2]string{
		// What drivers check before they run anything: pgx's simple
		// protocol wants UTF8 and standard_conforming_strings on.
		{"server_version", "16.0 (pgtenant " + version() + " console)"},
		{"server_encoding", "UTF8"},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"IntervalStyle", "postgres"},
		{"TimeZone", "UTC"},
		{"integer_datetimes", "on"},
		{"standard_conforming_strings", "on"},
		{"is_superuser", "off"},
		{"session_authorization", s.user},
		{"application_name", ""},
	} {
		b, _ = (&pgproto3.ParameterStatus{Name: p[0], Value: p[1]}).Encode(b)
	}
	b, _ = (&pgproto3.BackendKeyData{ProcessID: s.key.pid, SecretKey: s.key.secret[:]}).Encode(b)
	b = append(b, readyForQuery('I')...)
	_, _ = s.cw.Write(b)
	err := s.cw.Flush()

	s.mu.Lock()
	s.greeting = false
	s.cond.Broadcast()
	s.mu.Unlock()
	if err == nil {
		s.logger().Info("admin console opened")
	}
	return err
}

// maxConsoleQuery bounds a console command's text; commands are a few
// words.
const maxConsoleQuery = 64 << 10

// serveConsole reads the console client's messages until it leaves. The
// client goroutine owns cw between messages, as a detached tenant client's
// does: it takes cw for each answer (consoleSend), so that shutdown's
// closeIfIdle and an answer never write at once.
func (s *session) serveConsole(ctx context.Context) {
	// skipping: an extended-protocol batch is being refused; its messages
	// are dropped up to its Sync, which is answered with the error.
	skipping := false
	for {
		if s.killed.Load() {
			s.endConsole(killedError())
			return
		}
		typ, n, err := peekHeader(s.cr)
		if err != nil {
			switch {
			case s.killed.Load():
				s.endConsole(killedError())
			case errors.Is(err, errMalformed):
				s.endConsole(fatalf(codeProtocolViolation, "invalid message from client: %v", err))
			}
			return
		}
		switch typ {
		case 'X':
			return
		case 'Q':
			if n > maxConsoleQuery {
				if discard(s.cr, n) != nil {
					return
				}
				out := consoleError(nil, errorf(codeFeatureUnsupported, "console command too long (%d bytes)", n))
				if !s.consoleSend(append(out, readyForQuery('I')...)) {
					return
				}
				continue
			}
			if _, err := s.cr.Discard(5); err != nil {
				return
			}
			body, err := readWhole(s.cr, n)
			if err != nil {
				return
			}
			if len(body) == 0 || body[len(body)-1] != 0 {
				s.endConsole(fatalf(codeProtocolViolation, "malformed %q message", typ))
				return
			}
			out, after := s.runConsole(ctx, string(body[:len(body)-1]))
			ok := s.consoleSend(append(out, readyForQuery('I')...))
			if after != nil {
				after()
			}
			if !ok {
				return
			}
		case 'S':
			if discard(s.cr, n) != nil {
				return
			}
			var out []byte
			if skipping {
				out = consoleError(out, extendedRefused())
				skipping = false
			}
			if !s.consoleSend(append(out, readyForQuery('I')...)) {
				return
			}
		case 'F':
			// A FunctionCall is answered at once, as PostgreSQL does.
			if discard(s.cr, n) != nil {
				return
			}
			if !s.consoleSend(append(consoleError(nil, extendedRefused()), readyForQuery('I')...)) {
				return
			}
		case 'P', 'B', 'D', 'E', 'C':
			if discard(s.cr, n) != nil {
				return
			}
			skipping = true
		case 'H', 'd', 'c', 'f':
			if discard(s.cr, n) != nil {
				return
			}
		default:
			s.endConsole(fatalf(codeProtocolViolation, "invalid frontend message type %q", typ))
			return
		}
	}
}

func extendedRefused() *pgError {
	return &pgError{Severity: "ERROR", Code: codeFeatureUnsupported,
		Message: "the pgtenant admin console understands only simple queries",
		Hint:    "Send console commands with the simple query protocol (psql does; pgx: QueryExecModeSimpleProtocol)."}
}

// consoleSend writes out to the console client, taking cw as a detached
// client goroutine does (cwBusy). It reports false when the session is
// over: shutdown is closing it, or the write failed.
func (s *session) consoleSend(out []byte) bool {
	s.mu.Lock()
	if s.cwBusy {
		s.mu.Unlock()
		return false
	}
	s.cwBusy = true
	s.mu.Unlock()
	_, _ = s.cw.Write(out)
	err := s.cw.Flush()
	s.mu.Lock()
	s.cwBusy = false
	s.mu.Unlock()
	return err == nil
}

// endConsole tells the console client why its session ends, unless
// shutdown is already telling it.
func (s *session) endConsole(e *pgError) {
	s.mu.Lock()
	tell := !s.cwBusy
	s.cwBusy = true
	s.mu.Unlock()
	if tell {
		s.fail(e)
	}
	if e.Code == codeAdminShutdown {
		s.logger().Info("admin console terminated by the administrator")
	}
}

// endKilled ends a tenant client killed from the console (KILL,
// KILL_CLIENT) the way endIdleInTransaction ends an idle one: its
// transaction is rolled back and its backend goes back to the pool by the
// normal teardown (a command still running is cancelled and its backend
// closed), and then it is told FATAL 57P01.
func (s *session) endKilled() {
	s.endTelling(killedError())
	s.logger().Info("client terminated by the administrator")
}

// kill ends the session from the console: the client goroutine finds
// killed at its next read, which the read deadline makes now.
func (s *session) kill() {
	s.killed.Store(true)
	_ = s.nc.SetReadDeadline(time.Now())
}

// consoleError appends an ErrorResponse for e.
func consoleError(out []byte, e *pgError) []byte {
	out, _ = e.Response().Encode(out)
	return out
}

// consoleNotice appends a NoticeResponse.
func consoleNotice(out []byte, msg string) []byte {
	out, _ = (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg}).Encode(out)
	return out
}

// runConsole runs the commands of one Query, separated by semicolons, and
// returns what the client is told before ReadyForQuery; after, when set,
// runs once that is sent (SHUTDOWN). As in PostgreSQL, a failed command
// skips the rest of the Query.
func (s *session) runConsole(ctx context.Context, text string) (out []byte, after func()) {
	ran := false
	for _, stmt := range strings.Split(text, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		ran = true
		cmd, perr := parseConsole(stmt)
		if perr == nil {
			s.logger().Info("admin console command", "command", cmd.String())
			var a func()
			out, a, perr = s.srv.runConsoleCommand(ctx, s, cmd, out)
			if a != nil {
				after = a
			}
		}
		if perr != nil {
			return consoleError(out, perr), after
		}
	}
	if !ran {
		out, _ = (&pgproto3.EmptyQueryResponse{}).Encode(out)
	}
	return out, after
}

// consoleCmd is a parsed console command: its verb (SHOW TENANTS, PAUSE,
// ...) and its one argument, if any.
type consoleCmd struct {
	verb string
	arg  string
}

func (c consoleCmd) String() string {
	if c.arg == "" {
		return c.verb
	}
	return c.verb + " " + c.arg
}

// consoleCommands are the verbs and whether each takes an argument:
// argNone, argOptional or argRequired.
const (
	argNone = iota
	argOptional
	argRequired
)

var consoleCommands = []struct {
	verb string
	arg  int
}{
	{"SHOW TENANTS", argNone},
	{"SHOW POOLS", argNone},
	{"SHOW CLIENTS", argNone},
	{"SHOW SERVERS", argNone},
	{"SHOW STATS", argNone},
	{"SHOW CONFIG", argNone},
	{"SHOW VERSION", argNone},
	{"PAUSE", argOptional},
	{"RESUME", argOptional},
	{"DISABLE", argRequired},
	{"ENABLE", argRequired},
	{"KILL", argRequired},
	{"KILL_CLIENT", argRequired},
	{"RELOAD", argNone},
	{"SHUTDOWN", argOptional}, // WAIT_FOR_CLIENTS
}

// consoleHint lists the commands, for the error of an unknown one.
const consoleHint = "Commands: SHOW TENANTS | POOLS | CLIENTS | SERVERS | STATS | CONFIG | VERSION; " +
	"PAUSE [tenant]; RESUME [tenant]; DISABLE tenant; ENABLE tenant; KILL tenant; KILL_CLIENT id; " +
	"RELOAD; SHUTDOWN [WAIT_FOR_CLIENTS]."

// parseConsole parses one console command: keywords in any case, blanks
// anywhere between words, an argument as an identifier (folded to lower
// case unless double-quoted) or a number.
func parseConsole(stmt string) (consoleCmd, *pgError) {
	words := strings.Fields(stmt)
	unknown := func() (consoleCmd, *pgError) {
		return consoleCmd{}, &pgError{Severity: "ERROR", Code: pgerr.SyntaxError,
			Message: "unknown pgtenant console command: " + strings.Join(words, " "), Hint: consoleHint}
	}
	if len(words) == 0 {
		return unknown()
	}
	for _, c := range consoleCommands {
		kw := strings.Fields(c.verb)
		if len(words) < len(kw) {
			continue
		}
		match := true
		for i, w := range kw {
			if !strings.EqualFold(words[i], w) {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		rest := words[len(kw):]
		switch {
		case len(rest) > 1:
			return consoleCmd{}, &pgError{Severity: "ERROR", Code: pgerr.SyntaxError,
				Message: c.verb + " takes at most one argument", Hint: consoleHint}
		case len(rest) == 0 && c.arg == argRequired:
			return consoleCmd{}, &pgError{Severity: "ERROR", Code: pgerr.SyntaxError,
				Message: c.verb + " needs an argument", Hint: consoleHint}
		case len(rest) == 1 && c.arg == argNone:
			return consoleCmd{}, &pgError{Severity: "ERROR", Code: pgerr.SyntaxError,
				Message: c.verb + " takes no argument", Hint: consoleHint}
		}
		cmd := consoleCmd{verb: c.verb}
		if len(rest) == 1 {
			arg := rest[0]
			if len(arg) >= 2 && arg[0] == '"' && arg[len(arg)-1] == '"' {
				arg = strings.ReplaceAll(arg[1:len(arg)-1], `""`, `"`)
			} else {
				arg = strings.ToLower(arg)
			}
			cmd.arg = arg
		}
		if cmd.verb == "SHUTDOWN" && cmd.arg != "" && cmd.arg != "wait_for_clients" {
			return consoleCmd{}, &pgError{Severity: "ERROR", Code: pgerr.SyntaxError,
				Message: "SHUTDOWN takes only WAIT_FOR_CLIENTS", Hint: consoleHint}
		}
		return cmd, nil
	}
	return unknown()
}
