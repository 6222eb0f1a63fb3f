#!/bin/sh
# build-static.sh builds the static pgtenant binary that the Dockerfile's
# build stage ships, with the Dockerfile's exact settings: the Dockerfile
# runs this script, and `make check-packaging` runs it here too, so what is
# tested is what the image holds. Usage: scripts/build-static.sh OUTPUT [PACKAGE]
#
# CGO_ENABLED=0: no libc, so the binary runs on a distroless/static base.
# -trimpath: no build machine paths in the binary or its panics.
# PACKAGE defaults to pgtenant itself (.); the Dockerfile also builds
# ./packaging/healthcheck, its HEALTHCHECK, with the same settings.
# The module version and commit come from Go's build info, which needs the
# git repository; in a tree without one (a Docker build context without
# .git, or a worktree whose .git points outside it) VCS stamping is turned
# off instead of failing the build, and `pgtenant version` says (devel).
set -eu

out="${1:?usage: build-static.sh OUTPUT [PACKAGE]}"
pkg="${2:-.}"
case "$out" in
/*) ;;
*) out="$PWD/$out" ;;
esac
cd "$(dirname "$0")/.."

buildvcs=auto
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	buildvcs=false
fi

CGO_ENABLED=0 exec go build -trimpath -buildvcs="$buildvcs" -o "$out" "$pkg"
