// Package config owns pgtenant's settings: one Config struct whose every
// field says its unit and default, one constructor (Validate) that checks it,
// and the command-line flags that fill it with the precedence
// flags > PGTENANT_* environment variables > TOML file (--config).
//
// Every other package takes the values it needs from Config; none of them
// reads flags, the environment or files on its own.
package config
