package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestParseUserList(t *testing.T) {
	good := []struct {
		name, line, user string
		kind             SecretKind
		text             string
	}{
		{"scram", `"alice" "` + pencilVerifier + `"`, "alice", SecretSCRAM, ""},
		{"md5", `"bob" "md5` + strings.Repeat("ab", 16) + `"`, "bob", SecretMD5, "md5" + strings.Repeat("ab", 16)},
		{"plain", `"carol" "hunter2"`, "carol", SecretPlain, "hunter2"},
		{"escaped quotes", `"da""ve" "say ""hi"""`, `da"ve`, SecretPlain, `say "hi"`},
		{"tabs and indent", "\t \"erin\"\t\t\"pw\"  ", "erin", SecretPlain, "pw"},
		{"trailing comment ;", `"frank" "pw" ; note`, "frank", SecretPlain, "pw"},
		{"trailing comment #", `"grace" "pw"# note`, "grace", SecretPlain, "pw"},
		{"CRLF", "\"heidi\" \"pw\"\r", "heidi", SecretPlain, "pw"},
		{"spaces inside", `"ivan smith" "correct horse battery"`, "ivan smith", SecretPlain, "correct horse battery"},
		{"semicolon inside", `"judy" "a;b#c"`, "judy", SecretPlain, "a;b#c"},
		{"unicode", `"ölaf" "pässwörd"`, "ölaf", SecretPlain, "pässwörd"},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			users, err := ParseUserList([]byte(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			s, ok := users[tc.user]
			if !ok || len(users) != 1 || s.Kind != tc.kind || (tc.text != "" && s.Text != tc.text) {
				t.Fatalf("got %d users, %q: %v %q", len(users), tc.user, s.Kind, s.Text)
			}
		})
	}

	bad := []struct{ name, text, want string }{
		{"unquoted user", `alice "pw"`, "line 1: want"},
		{"unquoted password", `"alice" pw`, `line 1: user "alice": want the password`},
		{"no password", `"alice"`, `line 1: user "alice": want the password`},
		{"no space", `"alice"x"pw"`, `line 1: user "alice": want the password`},
		{"unterminated user", `"alice pw`, "line 1: user name: missing closing double quote"},
		{"unterminated password", `"alice" "pw`, `line 1: user "alice": password: missing closing double quote`},
		{"third field", `"alice" "pw" "extra"`, `line 1: user "alice": unexpected text after the password`},
		{"empty user", `"" "pw"`, "line 1: empty user name"},
		{"empty password", `"alice" ""`, `line 1: user "alice": empty password`},
		{"bad verifier", `"alice" "SCRAM-SHA-256$4096:x$y:z"`, `line 1: user "alice": malformed SCRAM verifier`},
		{"uppercase md5", `"alice" "md5` + strings.Repeat("AB", 16) + `"`, `line 1: user "alice": md5 hash must be`},
		{"NUL", "\"alice\" \"p\x00w\"", "line 1: NUL byte"},
		{"duplicate", "\"alice\" \"a\"\n; c\n\"alice\" \"b\"", `line 3: user "alice" is already defined on line 1`},
		{"line numbers", "; header\n\n\"ok\" \"pw\"\nbroken\n\"fine\" \"pw\"", "line 4: want"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			users, err := ParseUserList([]byte(tc.text))
			if err == nil {
				t.Fatalf("parsed %d users, want an error", len(users))
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to start with %q", err, tc.want)
			}
			var le *UserListError
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not a *UserListError", err)
			}
			if strings.Contains(err.Error(), "pw\"") || strings.Contains(err.Error(), "p\x00w") {
				t.Fatalf("error shows the password: %q", err)
			}
		})
	}

	// Every bad line is reported, not just the first.
	_, err := ParseUserList([]byte("bad one\n\"ok\" \"pw\"\nbad two\n"))
	if err == nil || !strings.Contains(err.Error(), "line 1:") || !strings.Contains(err.Error(), "line 3:") {
		t.Fatalf("error %v, want lines 1 and 3", err)
	}

	// Blank lines and comments only: no users, no error.
	users, err := ParseUserList([]byte("\n; comment\n# comment\n   \n\t; indented\n"))
	if err != nil || len(users) != 0 {
		t.Fatalf("got %v, %v", users, err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	// Write then rename, as an editor or config manager does, so that a
	// concurrent Reload reads either the old or the new file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestUserFileReload(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "userlist.txt")
	writeFile(t, path, "\"alice\" \"one\"\n")
	f, err := OpenUserFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(user string) (string, bool) {
		s, ok, err := f.Lookup(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return s.Text, ok
	}
	if pw, ok := lookup("alice"); !ok || pw != "one" {
		t.Fatalf("alice: %q %v", pw, ok)
	}

	writeFile(t, path, "\"alice\" \"two\"\n\"bob\" \"three\"\n")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if pw, ok := lookup("alice"); !ok || pw != "two" {
		t.Fatalf("alice after reload: %q %v", pw, ok)
	}
	if _, ok := lookup("bob"); !ok || f.Len() != 2 {
		t.Fatal("bob missing after reload")
	}

	// A broken file is reported and the old users stay in force.
	writeFile(t, path, "\"alice\" \"four\"\nbroken line\n")
	err = f.Reload()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("reload of a broken file: %v", err)
	}
	if pw, ok := lookup("alice"); !ok || pw != "two" {
		t.Fatalf("alice after a failed reload: %q %v", pw, ok)
	}

	// So does a missing file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if _, ok := lookup("bob"); !ok {
		t.Fatal("bob lost by a failed reload")
	}

	if _, err := OpenUserFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("OpenUserFile of a missing file succeeded")
	}
}

// TestUserFileConcurrent looks users up while the file is reloaded over and
// over; run with -race. Every lookup must find alice, whichever version of
// the file it sees, and the last version must win.
func TestUserFileConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "userlist.txt")
	gen := func(n int) string {
		g := strings.Repeat("x", n)
		return "\"alice\" \"a" + g + "\"\n\"bob\" \"b" + g + "\"\n"
	}
	writeFile(t, path, gen(1))
	f, err := OpenUserFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, okA, _ := f.Lookup(ctx, "alice")
				if !okA || len(a.Text) < 2 {
					t.Error("alice missing")
					return
				}
			}
		}()
	}
	for i := 2; i < 200; i++ {
		writeFile(t, path, gen(i))
		if err := f.Reload(); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
	a, _, _ := f.Lookup(ctx, "alice")
	b, _, _ := f.Lookup(ctx, "bob")
	if len(a.Text) != 200 || len(b.Text) != 200 {
		t.Fatalf("final generation: %d, %d", len(a.Text), len(b.Text))
	}
}

func TestFirstOf(t *testing.T) {
	alice, _ := ParseSecret("md5" + strings.Repeat("a", 32))
	bob, _ := ParseSecret("bob-plain")
	shadow, _ := ParseSecret("shadowed")
	failing := failingSource{err: errors.New("source down")}
	src := FirstOf{StaticUsers{"alice": alice}, StaticUsers{"alice": shadow, "bob": bob}}
	ctx := context.Background()
	if s, ok, err := src.Lookup(ctx, "alice"); err != nil || !ok || s.Text != alice.Text {
		t.Errorf("alice: %v %v %v, want the first source's secret", s, ok, err)
	}
	if s, ok, err := src.Lookup(ctx, "bob"); err != nil || !ok || s.Text != bob.Text {
		t.Errorf("bob: %v %v %v, want the second source's secret", s, ok, err)
	}
	if _, ok, err := src.Lookup(ctx, "carol"); err != nil || ok {
		t.Errorf("carol: found=%v err=%v, want not found", ok, err)
	}
	src = FirstOf{failing, StaticUsers{"bob": bob}}
	if _, ok, err := src.Lookup(ctx, "bob"); err == nil || ok {
		t.Errorf("failing first source: found=%v err=%v, want its error", ok, err)
	}
}
