// Command pgtenant is a PostgreSQL pooling proxy that gives every tenant its
// own schema on one shared pool of server connections. The commands live in
// internal/cli.
package main

import "github.com/pgtenant/pgtenant/internal/cli"

func main() {
	cli.Main()
}
