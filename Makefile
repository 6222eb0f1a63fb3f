# pgtenant's build, test and demo entry points. `make test` is what CI runs
# (through .ci/run); every target that needs PostgreSQL or pgbouncer runs
# `deps` first, which installs them when missing and is silent otherwise.
# `make demo` runs `deps-demo` instead, which wants only PostgreSQL.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Go installed from the official tarball lives here; append it so that a Go
# already on PATH keeps priority.
export PATH := $(PATH):/usr/local/go/bin

GO ?= go
# FUZZTIME is how long `make fuzz` runs each fuzz target.
FUZZTIME ?= 10s

# `make install` copies bin/pgtenant to $(GOBIN) when that is set, else to
# $(PREFIX)/bin; DESTDIR is prepended for packagers.
PREFIX ?= /usr/local
BINDIR ?= $(if $(GOBIN),$(GOBIN),$(PREFIX)/bin)

.PHONY: deps deps-demo build install demo test vet fmt-check check-packaging fuzz

deps:
	bash scripts/deps.sh

deps-demo:
	bash scripts/deps.sh --demo

# BUILDVCS stamps the commit into the binary's build info (pgtenant
# --version reads it) whenever git can read the repository, even where
# GOFLAGS says -buildvcs=false; elsewhere (no git, a copied tree) it builds
# without, as scripts/build-static.sh does.
BUILDVCS := $(shell git rev-parse --is-inside-work-tree >/dev/null 2>&1 && echo auto || echo false)

# A go build rather than go run: the binary's build info carries the module
# version and the commit, and later runs start at once.
build:
	@echo "== building bin/pgtenant (go build: a few seconds with Go's build cache warm, about 2 min on a fresh 2-core machine)"
	$(GO) build -buildvcs=$(BUILDVCS) -o bin/pgtenant .

install: build
	install -d "$(DESTDIR)$(BINDIR)"
	install -m 0755 bin/pgtenant "$(DESTDIR)$(BINDIR)/pgtenant"
	@echo "== installed $(DESTDIR)$(BINDIR)/pgtenant"

# demo execs the binary so that it is make's child itself: GNU make passes a
# SIGTERM it gets on to its children, and Ctrl-C reaches the whole
# foreground process group, so either stops pgtenant, which removes its
# throwaway PostgreSQL and data directory. (A SIGINT sent to the make
# process alone is not passed on: make waits for its children, assuming the
# terminal signalled them too. Send SIGTERM, or signal the process group.)
demo: deps-demo build
	exec bin/pgtenant demo

# RACE_PKGS run under the race detector: two goroutines serve each client
# connection (proxy/relay.go), and the integration tests drive them hardest.
# internal/... (the CLI's signal handling, the cluster's log copier) costs
# about 20 s more under it. The other packages (the root main, bench,
# config) run without it; the grep below must exclude exactly RACE_PKGS, and
# packaging, which check-packaging runs.
RACE_PKGS := ./proxy/... ./pool ./router ./auth ./internal/... ./integration

# test says what it is doing before each phase: go test prints a package's
# line only when the package is done, and the race phase is silent for
# minutes while the integration tests run.
test:
	@echo "== make test: deps, vet, gofmt, packaging checks, unit tests, then race-detector and integration tests (about 6-8 min on 2 cores)"
	@echo "== deps: installing PostgreSQL, pgbouncer and the driver test tools if missing (silent when present)"
	@$(MAKE) --no-print-directory deps
	@echo "== go vet"
	@$(MAKE) --no-print-directory vet
	@echo "== gofmt"
	@$(MAKE) --no-print-directory fmt-check
	@echo "== packaging: Dockerfile, docker-compose.yml, systemd unit, sample config, static build (about 30 s; a few minutes the first time, when the static build is not cached)"
	@$(MAKE) --no-print-directory check-packaging
	@echo "== unit tests without the race detector: root, bench, config (under a minute)"
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v -e /proxy -e /pool$$ -e /router$$ -e /auth$$ -e /internal/ -e /integration$$ -e /packaging$$)
	@echo "== race-detector tests: proxy, pool, router, auth, internal, then integration against a real PostgreSQL (about 5-7 min; each package's line prints when it is done)"
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)
	@echo "== make test: all passed"

vet:
	$(GO) vet ./...

# check-packaging exercises what `docker build`, `docker compose up` and
# systemd would read, without needing any of them: the Dockerfile's build
# stage (scripts/build-static.sh, run here as the Dockerfile runs it), the
# Dockerfile's and compose file's shape, the unit file (systemd-analyze
# verify) and packaging/pgtenant.toml (every setting, at its default).
check-packaging:
	$(GO) test -count=1 ./packaging
	$(GO) test -count=1 ./config -run 'TestSampleConfig'

# fmt-check fails, listing them, when any Go file is not gofmt-formatted.
fmt-check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run gofmt -w on them):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi

# fuzz runs every fuzz target in the module for FUZZTIME each. `go test -list`
# prints a package's matching test names followed by its "ok <package>" line,
# so the awk pairs each name with the package that follows it.
fuzz:
	@listing="$$($(GO) test -list '^Fuzz' ./...)"; \
	targets="$$(printf '%s\n' "$$listing" | awk ' \
		/^Fuzz/ { names[n++] = $$1; next } \
		/^ok/   { for (i = 0; i < n; i++) print $$2, names[i]; n = 0; next } \
		        { n = 0 }')"; \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz targets found"; exit 0; fi; \
	while read -r pkg target; do \
		echo "fuzz: $$pkg $$target for $(FUZZTIME)"; \
		$(GO) test "$$pkg" -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) </dev/null; \
	done <<< "$$targets"
