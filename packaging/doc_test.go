// Package packaging holds the tests of the files that ship pgtenant outside
// a Go toolchain: the Dockerfile and .dockerignore at the repository root,
// docker-compose.yml with packaging/compose-init.sql, packaging/pgtenant.service
// and the static build (scripts/build-static.sh, which the Dockerfile runs).
// Docker and systemd are not needed: each file is checked for what they
// would read, and the binaries the image holds are built and run here.
// packaging/pgtenant.toml is held by config's TestSampleConfig.
package packaging
