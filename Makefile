# pgtenant's build, test and demo entry points. `make test` is what CI runs
# (through .ci/run); every target that needs PostgreSQL or pgbouncer runs
# `deps` first, which installs them when missing and is silent otherwise.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

# Go installed from the official tarball lives here; append it so that a Go
# already on PATH keeps priority.
export PATH := $(PATH):/usr/local/go/bin

GO ?= go
# FUZZTIME is how long `make fuzz` runs each fuzz target.
FUZZTIME ?= 10s

.PHONY: deps build demo test vet fmt-check fuzz

deps:
	bash scripts/deps.sh

build:
	$(GO) build -o bin/pgtenant .

demo: deps
	$(GO) run . demo

# RACE_PKGS run under the race detector: two goroutines serve each client
# connection (proxy/relay.go), and the integration tests drive them hardest.
# internal/... (the CLI's signal handling, the cluster's log copier) costs
# about 20 s more under it. The other packages (the root main, bench,
# config) run without it; the grep below must exclude exactly RACE_PKGS.
RACE_PKGS := ./proxy/... ./pool ./router ./auth ./internal/... ./integration

test: deps vet fmt-check
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v -e /proxy -e /pool$$ -e /router$$ -e /auth$$ -e /internal/ -e /integration$$)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

vet:
	$(GO) vet ./...

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
