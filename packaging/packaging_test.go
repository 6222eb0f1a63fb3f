package packaging

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"gopkg.in/yaml.v3"
)

// root is the repository root, where the Dockerfile's build context starts.
const root = ".."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasPrefix(line, "#") { // a comment inside a continuation
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends inside a continuation line", path)
	}
	return out
}

// goVersion is go.mod's go line as major.minor (1.26), which the build
// stage's golang image must match.
func goVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// TestDockerfile checks the Dockerfile's shape: a golang build stage that
// builds through scripts/build-static.sh (so TestStaticBuild runs what the
// image holds), a distroless or scratch final stage running as a non-root
// user, the port, the healthcheck and the entrypoint.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	var stages [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want 2 (build, final)", len(stages))
	}
	build, final := stages[0], stages[1]

	want := regexp.MustCompile(`^golang:` + regexp.QuoteMeta(goVersion(t)) + `(\.\d+)?(-\S+)? AS build$`)
	if !want.MatchString(build[0].args) {
		t.Errorf("Dockerfile:%d: FROM %s, want golang:%s... AS build (go.mod's Go)", build[0].line, build[0].args, goVersion(t))
	}
	var runs []string
	for _, in := range build {
		if in.cmd == "RUN" {
			runs = append(runs, in.args)
		}
	}
	run := strings.Join(runs, " && ")
	for _, want := range []string{"scripts/build-static.sh /out/pgtenant .", "scripts/build-static.sh /out/healthcheck ./packaging/healthcheck"} {
		if !strings.Contains(run, want) {
			t.Errorf("Dockerfile build stage does not run %q", want)
		}
	}
	if strings.Contains(run, "go build") {
		t.Error("Dockerfile runs go build itself: build through scripts/build-static.sh, whose flags TestStaticBuild checks")
	}

	base := final[0].args
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("Dockerfile:%d: final stage FROM %s, want a static base (distroless/static or scratch)", final[0].line, base)
	}
	get := func(cmd string) []instruction {
		var out []instruction
		for _, in := range final {
			if in.cmd == cmd {
				out = append(out, in)
			}
		}
		return out
	}
	users := get("USER")
	if len(users) == 0 {
		t.Error("Dockerfile: the final stage has no USER: it would run as root")
	} else if u, _, _ := strings.Cut(users[len(users)-1].args, ":"); u == "root" || u == "0" {
		t.Errorf("Dockerfile:%d: USER %s is root", users[len(users)-1].line, u)
	} else if _, err := strconv.Atoi(u); err != nil {
		t.Errorf("Dockerfile:%d: USER %s: give it as a number, which runAsNonRoot can check", users[len(users)-1].line, u)
	}
	if e := get("EXPOSE"); len(e) != 1 || e[0].args != "6432" {
		t.Errorf("Dockerfile: EXPOSE %v, want 6432", e)
	}
	var copied []string
	for _, in := range get("COPY") {
		fields := strings.Fields(in.args)
		dest := fields[len(fields)-1]
		for _, src := range fields[:len(fields)-1] {
			if !strings.HasPrefix(src, "--") {
				copied = append(copied, filepath.Join(dest, filepath.Base(src)))
			}
		}
	}
	hc := get("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("Dockerfile: %d HEALTHCHECKs in the final stage, want 1", len(hc))
	}
	_, hcCmd, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok || !strings.HasPrefix(hcCmd, `["`) {
		t.Fatalf("Dockerfile:%d: HEALTHCHECK %s: want exec form CMD [...], the image has no shell", hc[0].line, hc[0].args)
	}
	if exe := strings.Trim(strings.Split(strings.Trim(hcCmd, "[]"), ",")[0], `" `); !slices.Contains(copied, exe) {
		t.Errorf("Dockerfile: HEALTHCHECK runs %s, which the final stage does not COPY (it has %v)", exe, copied)
	}
	ep := get("ENTRYPOINT")
	if len(ep) != 1 || ep[0].args != `["/usr/local/bin/pgtenant"]` || !slices.Contains(copied, "/usr/local/bin/pgtenant") {
		t.Errorf("Dockerfile: ENTRYPOINT %v, want [\"/usr/local/bin/pgtenant\"], copied from the build stage", ep)
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// staticBinaries builds pgtenant and healthcheck as the Dockerfile's build
// stage does, once per test binary, and returns their directory.
func staticBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pgtenant-static-")
		if buildErr != nil {
			return
		}
		for _, b := range [][2]string{{"pgtenant", "."}, {"healthcheck", "./packaging/healthcheck"}} {
			cmd := exec.Command("sh", filepath.Join(root, "scripts/build-static.sh"), filepath.Join(binDir, b[0]), b[1])
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("scripts/build-static.sh %s: %v\n%s", b[0], err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// TestStaticBuild runs the Dockerfile's build stage (scripts/build-static.sh)
// and checks that what it makes can run on distroless/static: no dynamic
// loader, no shared libraries, cgo off, paths trimmed.
func TestStaticBuild(t *testing.T) {
	dir := staticBinaries(t)
	for _, name := range []string{"pgtenant", "healthcheck"} {
		path := filepath.Join(dir, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a dynamic loader (PT_INTERP): it would not run on a static base", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s needs shared libraries %v", name, libs)
		}
		f.Close()
		info, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s built with CGO_ENABLED=%q -trimpath=%q, want 0 and true", name, settings["CGO_ENABLED"], settings["-trimpath"])
		}
	}
	if out, err := exec.Command(filepath.Join(dir, "pgtenant"), "--help").CombinedOutput(); err != nil {
		t.Fatalf("static pgtenant --help: %v\n%s", err, out)
	}
}

// compose is the part of docker-compose.yml the tests read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Healthcheck map[string]any    `yaml:"healthcheck"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// TestComposeFile checks docker-compose.yml's services: PostgreSQL 15 with
// the init SQL and a healthcheck, the one-shot tenant creations waiting for
// it, and pgtenant waiting for them, built from the Dockerfile and published
// on the host's loopback only (it serves with trust).
func TestComposeFile(t *testing.T) {
	c := readCompose(t)
	pg, ok := c.Services["postgres"]
	if !ok {
		t.Fatalf("docker-compose.yml: no postgres service (services: %v)", keys(c.Services))
	}
	if !strings.HasPrefix(pg.Image, "postgres:15") {
		t.Errorf("postgres image %q, want postgres:15 (what pgtenant is tested with)", pg.Image)
	}
	if pg.Healthcheck == nil {
		t.Error("postgres has no healthcheck: service_healthy would never hold")
	}
	initSQL := false
	for _, v := range pg.Volumes {
		src, dst, _ := strings.Cut(v, ":")
		if strings.HasPrefix(dst, "/docker-entrypoint-initdb.d/") {
			initSQL = true
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				t.Errorf("postgres mounts %s: %v", src, err)
			}
		}
	}
	if !initSQL {
		t.Error("postgres mounts no init SQL into /docker-entrypoint-initdb.d: the pgtenant roles would be missing")
	}

	pgt, ok := c.Services["pgtenant"]
	if !ok {
		t.Fatal("docker-compose.yml: no pgtenant service")
	}
	if pgt.Build != "." {
		t.Errorf("pgtenant build %v, want . (the Dockerfile)", pgt.Build)
	}
	if !slices.Equal(pgt.Command, []string{"serve"}) {
		t.Errorf("pgtenant command %v, want [serve]", pgt.Command)
	}
	if !slices.Equal(pgt.Ports, []string{"127.0.0.1:6432:6432"}) {
		t.Errorf("pgtenant ports %v, want only 127.0.0.1:6432:6432 (trust authentication)", pgt.Ports)
	}
	tenants := 0
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "tenant-") {
			continue
		}
		tenants++
		if s.DependsOn["postgres"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for postgres to be healthy", name)
		}
		if pgt.DependsOn[name].Condition != "service_completed_successfully" {
			t.Errorf("pgtenant does not wait for %s to complete", name)
		}
		if s.Environment["PGTENANT_REGISTRY"] != pgt.Environment["PGTENANT_REGISTRY"] {
			t.Errorf("%s and pgtenant name different registries", name)
		}
	}
	if tenants == 0 {
		t.Error("docker-compose.yml creates no tenant")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestComposeRuns plays docker-compose.yml without Docker: a PostgreSQL 15
// with database app and compose-init.sql run as its superuser, as the
// postgres image would; then the static binaries the image holds, each
// service's command with its environment (host postgres:5432 pointed at the
// test server). The tenants must be created, serve must start as the pool
// role (its privilege check passes), the image's healthcheck must pass, and a
// client must land in its tenant's schema.
func TestComposeRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and pgtenant")
	}
	dir := staticBinaries(t)
	c := readCompose(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	if err := cl.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	initSQL, err := os.ReadFile(filepath.Join(root, "packaging/compose-init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, cl.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(initSQL)); err != nil {
		t.Fatalf("compose-init.sql: %v", err)
	}
	conn.Close(ctx)

	hostPort := net.JoinHostPort(cl.Host, strconv.Itoa(cl.Port))
	env := func(service string, extra ...string) []string {
		out := os.Environ()
		for k, v := range c.Services[service].Environment {
			out = append(out, k+"="+strings.ReplaceAll(v, "@postgres:5432/", "@"+hostPort+"/"))
		}
		return append(out, extra...)
	}
	pgtenant := filepath.Join(dir, "pgtenant")
	var tenants []string
	for _, name := range keys(c.Services) {
		if !strings.HasPrefix(name, "tenant-") {
			continue
		}
		// Twice: `docker compose up` runs them again on every start.
		for range 2 {
			cmd := exec.CommandContext(ctx, pgtenant, c.Services[name].Command...)
			cmd.Env = env(name)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: pgtenant %v: %v\n%s", name, c.Services[name].Command, err, out)
			}
		}
		tenants = append(tenants, strings.TrimPrefix(name, "tenant-"))
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	serve := exec.Command(pgtenant, c.Services["pgtenant"].Command...)
	serve.Env = env("pgtenant", "PGTENANT_LISTEN="+listen)
	var log strings.Builder
	serve.Stdout, serve.Stderr = &log, &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		<-exited
	}()

	healthcheck := func() error {
		cmd := exec.Command(filepath.Join(dir, "healthcheck"))
		cmd.Env = append(os.Environ(), "PGTENANT_LISTEN="+listen)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := healthcheck()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			t.Fatalf("pgtenant serve exited (%v) before it was healthy:\n%s", werr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck still failing after 30 s: %v\nserve log:\n%s", err, log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, tenant := range tenants {
		dsn := fmt.Sprintf("postgres://app@%s/%s?sslmode=disable", listen, tenant)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect to tenant %s through pgtenant: %v\nserve log:\n%s", tenant, err, log.String())
		}
		var schema string
		err = conn.QueryRow(ctx, "select current_schema()").Scan(&schema)
		conn.Close(ctx)
		if err != nil || schema != tenant {
			t.Errorf("tenant %s: current_schema() = %q, %v; want %q", tenant, schema, err, tenant)
		}
	}

	serve.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("pgtenant serve after SIGTERM: %v\n%s", err, log.String())
	}
	exited <- nil // for the deferred stop
	if err := healthcheck(); err == nil {
		t.Error("healthcheck passes with pgtenant stopped")
	}
}

// TestSystemdUnit checks packaging/pgtenant.service's essentials and runs
// systemd-analyze verify on it. verify wants ExecStart's binary to exist, so
// it checks a copy whose ExecStart names the static build instead of
// /usr/local/bin/pgtenant; it reports unknown keys on stderr with exit
// status 0, so any output fails the test.
func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile("pgtenant.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{
		"\nExecStart=/usr/local/bin/pgtenant serve --config /etc/pgtenant/pgtenant.toml\n",
		"\nExecReload=/bin/kill -HUP $MAINPID\n",
		"\nUser=pgtenant\n",
		"\nNoNewPrivileges=yes\n",
		"\nProtectSystem=strict\n",
		"\nWantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("pgtenant.service lacks %q", strings.TrimSpace(want))
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit's keys were checked, not verified")
	}
	pgtenant := filepath.Join(staticBinaries(t), "pgtenant")
	copyPath := filepath.Join(t.TempDir(), "pgtenant.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(unit, "/usr/local/bin/pgtenant", pgtenant)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatal(err)
	}
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify pgtenant.service: %v\n%s", err, out)
	}
}
