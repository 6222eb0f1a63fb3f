package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// UserSource knows users' secrets. Lookup reports found=false for a user it
// does not know (or who has no usable password); err is for a source that
// could not answer, and must not depend on which user was asked about.
type UserSource interface {
	Lookup(ctx context.Context, user string) (secret Secret, found bool, err error)
}

// StaticUsers is a fixed UserSource, user name to secret.
type StaticUsers map[string]Secret

// Lookup implements UserSource.
func (s StaticUsers) Lookup(_ context.Context, user string) (Secret, bool, error) {
	secret, ok := s[user]
	return secret, ok, nil
}

// UserFile is a UserSource read from a file in PgBouncer's userlist.txt
// format (see ParseUserList). Reload reads the file again and swaps the new
// contents in atomically, so Lookup never waits and never sees half a file;
// a file that fails to parse leaves the previous contents in place.
type UserFile struct {
	path   string
	users  atomic.Pointer[map[string]Secret]
	reload sync.Mutex // one Reload at a time, so the last file read wins
}

// OpenUserFile reads the user file at path.
func OpenUserFile(path string) (*UserFile, error) {
	f := &UserFile{path: path}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path is the file's path.
func (f *UserFile) Path() string { return f.path }

// Len is the number of users the file defines.
func (f *UserFile) Len() int { return len(*f.users.Load()) }

// Reload reads the file again. On error the users read last stay in force.
func (f *UserFile) Reload() error {
	f.reload.Lock()
	defer f.reload.Unlock()
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	users, err := ParseUserList(data)
	if err != nil {
		return fmt.Errorf("auth file %s: %w", f.path, err)
	}
	f.users.Store(&users)
	return nil
}

// Lookup implements UserSource.
func (f *UserFile) Lookup(_ context.Context, user string) (Secret, bool, error) {
	secret, ok := (*f.users.Load())[user]
	return secret, ok, nil
}

// UserListError is a malformed line of a user list.
type UserListError struct {
	Line int    // 1-based
	Msg  string // what is wrong; never the secret itself
}

func (e *UserListError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ParseUserList parses PgBouncer's userlist.txt format: one user per line,
//
//	"user name" "secret"
//
// both double-quoted, a double quote inside written twice (""), separated
// by spaces or tabs. The secret is a SCRAM-SHA-256 verifier, an md5 hash or
// a plain password (see ParseSecret). Blank lines are skipped, and so is
// everything from a ';' or '#' that starts a line or follows the secret.
// It is stricter than PgBouncer, which skips what it does not understand:
// anything else on a line, an empty user name or password, a NUL byte, a
// malformed verifier and a user defined twice are errors that give the
// line number, and all of them are reported (errors.Join of
// *UserListError), so a broken file is fixed in one pass.
func ParseUserList(data []byte) (map[string]Secret, error) {
	users := make(map[string]Secret)
	definedAt := make(map[string]int)
	var errs []error
	for n, line := range bytes.Split(data, []byte("\n")) {
		lineNo := n + 1
		user, secret, ok, err := parseUserLine(string(bytes.TrimSuffix(line, []byte("\r"))))
		if err != nil {
			errs = append(errs, &UserListError{Line: lineNo, Msg: err.Error()})
			continue
		}
		if !ok {
			continue
		}
		if first, dup := definedAt[user]; dup {
			errs = append(errs, &UserListError{Line: lineNo,
				Msg: fmt.Sprintf("user %q is already defined on line %d", user, first)})
			continue
		}
		definedAt[user] = lineNo
		users[user] = secret
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return users, nil
}

// parseUserLine parses one line; ok is false for a blank or comment line.
func parseUserLine(line string) (user string, secret Secret, ok bool, err error) {
	rest := strings.TrimLeft(line, " \t")
	if rest == "" || rest[0] == ';' || rest[0] == '#' {
		return "", Secret{}, false, nil
	}
	if strings.IndexByte(rest, 0) >= 0 {
		return "", Secret{}, false, errors.New("NUL byte in line")
	}
	if rest[0] != '"' {
		return "", Secret{}, false, errors.New(`want "user" "password", with both in double quotes`)
	}
	user, rest, err = unquote(rest)
	if err != nil {
		return "", Secret{}, false, fmt.Errorf("user name: %w", err)
	}
	if user == "" {
		return "", Secret{}, false, errors.New("empty user name")
	}
	after := strings.TrimLeft(rest, " \t")
	if after == rest || after == "" || after[0] != '"' {
		return "", Secret{}, false, fmt.Errorf("user %q: want the password in double quotes after the user name and a space", user)
	}
	text, rest, err := unquote(after)
	if err != nil {
		return "", Secret{}, false, fmt.Errorf("user %q: password: %w", user, err)
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest != "" && rest[0] != ';' && rest[0] != '#' {
		return "", Secret{}, false, fmt.Errorf("user %q: unexpected text after the password", user)
	}
	if secret, err = ParseSecret(text); err != nil {
		return "", Secret{}, false, fmt.Errorf("user %q: %w", user, err)
	}
	return user, secret, true, nil
}

// unquote reads a double-quoted string at the start of s, "" standing for
// one quote, and returns it and what follows the closing quote.
func unquote(s string) (value, rest string, err error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", errors.New("missing closing double quote")
}

// FirstOf is a UserSource that asks each source in turn and answers with
// the first that knows the user, as PgBouncer asks its auth_query only for
// users its auth_file does not list. A source that fails stops the search:
// going on could answer with a later source's secret for a user the failed
// one would have known, so the failure is reported.
type FirstOf []UserSource

// Lookup implements UserSource.
func (fs FirstOf) Lookup(ctx context.Context, user string) (Secret, bool, error) {
	for _, s := range fs {
		secret, found, err := s.Lookup(ctx, user)
		if err != nil || found {
			return secret, found, err
		}
	}
	return Secret{}, false, nil
}
