package config

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// samplePath is the sample config that packaging ships (the systemd unit
// reads /etc/pgtenant/pgtenant.toml). It is rendered from settings, so a
// new setting, a changed default or a changed --help text shows up here as
// a failing test until the file is rewritten with
// `go test ./config -run TestSampleConfig -update`.
const samplePath = "../packaging/pgtenant.toml"

var update = flag.Bool("update", false, "rewrite "+samplePath+" from the settings list")

// renderSample writes every setting, in --help order, as a commented-out
// `name = default` line under its usage text and variable: like
// postgresql.conf, the file as shipped changes nothing, and a line is
// uncommented to change it.
func renderSample() []byte {
	var b bytes.Buffer
	b.WriteString(`# pgtenant sample configuration: every setting of pgtenant serve, at its
# default. Generated from the settings list in config/flags.go by
# ` + "`go test ./config -run TestSampleConfig -update`" + `; edit there, not here.
#
# Keys are the flag names. Precedence: command-line flags, then PGTENANT_*
# variables, then this file, then the defaults shown. Durations are Go
# durations ("30s", "10m"). Uncomment a line to change it.
#
# Only backend has no default: set it here, or, to keep its password out of
# this file, as PGTENANT_BACKEND in the environment (packaging/pgtenant.service
# reads /etc/pgtenant/pgtenant.env).
`)
	def := Default()
	for _, s := range settings {
		f := s.newFlag().(cli.DocGenerationFlag)
		b.WriteString("\n")
		for _, line := range wrap(f.GetUsage(), 76) {
			b.WriteString("# " + line + "\n")
		}
		b.WriteString("# Variable: " + strings.Join(f.GetEnvVars(), ", ") + "\n")
		fmt.Fprintf(&b, "#%s = %s\n", s.name, tomlValue(s.value(&def)))
	}
	return b.Bytes()
}

// tomlValue writes a default as TOML of the type readConfigFile expects.
func tomlValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case bool:
		return strconv.FormatBool(v)
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64) + map[bool]string{true: ".0"}[v == float64(int64(v))]
	case time.Duration:
		// 1h0m0s reads better as 1h; ParseDuration takes either.
		s := v.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return strconv.Quote(s)
	}
	panic(fmt.Sprintf("sample config: no TOML form for %T", v))
}

func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// TestSampleConfig holds packaging/pgtenant.toml to the settings list: it
// must be what renderSample writes, and loading it with every line
// uncommented must give exactly Default(), through the same LoadConfigFile
// and FromContext that serve uses.
func TestSampleConfig(t *testing.T) {
	clearEnv(t)
	want := renderSample()
	if *update {
		if err := os.WriteFile(samplePath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatalf("%v (write it with go test ./config -run TestSampleConfig -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with config/flags.go; rewrite it with go test ./config -run TestSampleConfig -update", samplePath)
	}

	// As shipped, every setting is commented out: the file changes nothing.
	// backend is given on the command line, as the environment would give
	// it in the unit, since Validate requires it.
	const backend = "postgres://pgtenant_pool@db.internal/app"
	wantCfg := Default()
	wantCfg.Backend = backend
	cfg, err := runServe(t, "--config", samplePath, "--backend", backend)
	if err != nil {
		t.Fatalf("loading %s as shipped: %v", samplePath, err)
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Errorf("%s as shipped: got %+v, want Default()", samplePath, cfg)
	}

	// Uncommented, every line must say the default.
	var uncommented bytes.Buffer
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(got))
	for sc.Scan() {
		line := sc.Text()
		if key, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), " = "); ok && strings.HasPrefix(line, "#") && !strings.Contains(key, " ") {
			line = strings.TrimPrefix(line, "#")
			n++
		}
		uncommented.WriteString(line + "\n")
	}
	if n != len(settings) {
		t.Fatalf("%s has %d setting lines, want one per setting (%d)", samplePath, n, len(settings))
	}
	path := filepath.Join(t.TempDir(), "uncommented.toml")
	if err := os.WriteFile(path, uncommented.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = runServe(t, "--config", path, "--backend", backend)
	if err != nil {
		t.Fatalf("loading %s with every line uncommented: %v", samplePath, err)
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Errorf("%s uncommented: got\n%+v\nwant Default()\n%+v", samplePath, cfg, wantCfg)
	}
}
