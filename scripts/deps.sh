#!/usr/bin/env bash
# deps.sh installs what pgtenant's build, tests and demo need on a Debian
# machine, and prints nothing when all of it is already there:
#   - PostgreSQL 15 server and client (package postgresql): the integration
#     tests start their own server from /usr/lib/postgresql/15/bin, and the
#     benchmarks use psql and pgbench;
#   - pgbouncer, the benchmarks' point of comparison;
#   - Django and psycopg2 (python3-django, python3-psycopg2), which the
#     Django integration test runs a real project with;
#   - psycopg 3 and asyncpg (python3-psycopg, python3-asyncpg), pgjdbc
#     (libpostgresql-jdbc-java, /usr/share/java/postgresql.jar) and a JDK 17
#     to compile against it (openjdk-17-jdk-headless, when javac is missing):
#     the drivers integration test compares them through pgtenant and
#     directly;
#   - Node.js and npm (nodejs, npm) when node is missing, and the node-postgres
#     test app's modules (npm ci in integration/testdata/nodeapp) when they
#     are missing or older than its package-lock.json;
#   - Go, which it checks for but does not install.
# It is safe to run again and again; `make deps`, `make test` and .ci/run do.
#
# With --demo (`make deps-demo`, which `make demo` runs) it checks and
# installs only what `pgtenant demo` needs, the PostgreSQL 15 server
# binaries (initdb, pg_ctl, postgres), and Go: a new user trying the demo
# should not wait for the test suite's drivers and JDK.
set -euo pipefail

mode=all
case "${1:-}" in
"") ;;
--demo) mode=demo ;;
*)
	echo "deps.sh: unknown argument ${1}; usage: deps.sh [--demo]" >&2
	exit 2
	;;
esac

# PGTENANT_PG_BIN is where pgcluster (the tests, the demo) looks first.
PG_BIN="${PGTENANT_PG_BIN:-/usr/lib/postgresql/15/bin}"
GO_BIN=/usr/local/go/bin

say() { echo "deps.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# Go: the project cannot be built without it, and it is not a Debian package
# of the right version, so it is checked for, not installed.
if ! command -v go >/dev/null 2>&1; then
	if [ -x "$GO_BIN/go" ]; then
		export PATH="$PATH:$GO_BIN"
		say "go is in $GO_BIN but not on PATH; add it: export PATH=\"\$PATH:$GO_BIN\""
	else
		die "no Go toolchain found (neither on PATH nor in $GO_BIN); install Go (see go.mod for the version) and put it on PATH"
	fi
fi

missing=()
# The demo starts its throwaway server with these; the tests and benchmarks
# also want psql and pgbench, which come in the same package.
have_pg_server() { [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/postgres" ]; }
if [ "$mode" = demo ]; then
	have_pg_server || missing+=(postgresql)
elif ! { have_pg_server && command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; }; then
	missing+=(postgresql)
fi
# The rest is for the tests and benchmarks only.
if [ "$mode" = all ]; then
# pgbouncer lives in /usr/sbin, which is not on a non-root user's PATH.
have_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
if ! have_pgbouncer; then
	missing+=(pgbouncer)
fi
# Debian's python3-* packages are for Debian's interpreter, which a pyenv or
# virtualenv python3 earlier on PATH would hide: ask /usr/bin/python3, the one
# the Django test runs.
DEBIAN_PYTHON=/usr/bin/python3
have_django() { "$DEBIAN_PYTHON" -c 'import django, psycopg2' >/dev/null 2>&1; }
if ! have_django; then
	missing+=(python3-django python3-psycopg2)
fi
have_py_drivers() { "$DEBIAN_PYTHON" -c 'import psycopg, asyncpg' >/dev/null 2>&1; }
if ! have_py_drivers; then
	missing+=(python3-psycopg python3-asyncpg)
fi
# SQLAlchemy, which the SQLAlchemy integration test runs an app with.
if ! "$DEBIAN_PYTHON" -c 'import sqlalchemy' >/dev/null 2>&1; then
	missing+=(python3-sqlalchemy)
fi
PGJDBC_JAR=/usr/share/java/postgresql.jar
if [ ! -f "$PGJDBC_JAR" ]; then
	missing+=(libpostgresql-jdbc-java)
fi
have_jdk() { command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1; }
if ! have_jdk; then
	missing+=(openjdk-17-jdk-headless)
fi
# A Node.js from elsewhere (nodesource, nvm) ships its own npm; Debian's
# npm is only wanted alongside Debian's nodejs.
if ! command -v node >/dev/null 2>&1; then
	missing+=(nodejs)
	command -v npm >/dev/null 2>&1 || missing+=(npm)
elif ! command -v npm >/dev/null 2>&1; then
	missing+=(npm)
fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
		sudo=(sudo)
	fi
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install by hand: ${missing[*]}"

	# Without systemd (containers, CI), the packages' maintainer scripts
	# cannot start the services they ship and may fail the install for it.
	# The tests do not want those services anyway (they start their own
	# servers on free ports), so while installing, tell invoke-rc.d that
	# starting is not allowed: the conventional policy-rc.d that exits 101.
	# An existing one is left alone.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -d /run/systemd/system ] && [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# Written by pgtenant scripts/deps.sh for the length of an install.\nexit 101\n' |
			"${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 755 "$policy"
		made_policy=1
	fi
	cleanup() {
		if [ -n "$made_policy" ]; then
			"${sudo[@]}" rm -f "$policy"
		fi
	}
	trap cleanup EXIT

	say "installing: ${missing[*]}"
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}"

	# The postgresql package is whatever version this Debian release ships;
	# the project needs 15 (Debian 12's).
	have_pg_server ||
		die "installed postgresql, but $PG_BIN/initdb, pg_ctl or postgres is missing: this Debian ships another version; install postgresql-15, or set PGTENANT_PG_BIN to a PostgreSQL 15 bin directory"
	if [ "$mode" = demo ]; then
		say "done"
		exit 0
	fi
	for tool in psql pgbench node npm; do
		command -v "$tool" >/dev/null 2>&1 || die "installed ${missing[*]}, but $tool is still not on PATH"
	done
	have_pgbouncer || die "installed ${missing[*]}, but pgbouncer is still missing"
	have_django ||
		die "installed ${missing[*]}, but $DEBIAN_PYTHON still cannot import django and psycopg2"
	have_py_drivers ||
		die "installed ${missing[*]}, but $DEBIAN_PYTHON still cannot import psycopg (3) and asyncpg"
	[ -f "$PGJDBC_JAR" ] || die "installed ${missing[*]}, but $PGJDBC_JAR is still missing"
	have_jdk || die "installed ${missing[*]}, but javac and java are still not on PATH"
	say "done"
fi

[ "$mode" = demo ] && exit 0

# The node-postgres test's modules: installed from the committed lock file,
# again whenever the lock file changes.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nodeapp="$repo/integration/testdata/nodeapp"
if [ -f "$nodeapp/package-lock.json" ] &&
	{ [ ! -d "$nodeapp/node_modules" ] || [ "$nodeapp/package-lock.json" -nt "$nodeapp/node_modules" ]; }; then
	say "installing node modules in integration/testdata/nodeapp (npm ci)"
	(cd "$nodeapp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
		die "npm ci in $nodeapp failed"
	# npm ci recreates node_modules, but touch it anyway so that its time
	# says when it was last brought up to date with the lock file.
	touch "$nodeapp/node_modules"
fi
