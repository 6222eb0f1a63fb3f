package auth

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Conn is what a Method needs of the client connection during startup.
type Conn interface {
	// Send buffers one message to the client.
	Send(msg pgproto3.BackendMessage) error
	// Flush writes buffered messages.
	Flush() error
}

// Method authenticates one client. On success it has sent
// AuthenticationOk; on failure it returns an error and the proxy answers
// with the FATAL error the method chose.
type Method interface {
	Authenticate(ctx context.Context, c Conn, user string) error
}

// Trust admits every client without a password. It is the default only for
// a proxy that listens on loopback (the demo) or behind another guard.
type Trust struct{}

// Authenticate implements Method.
func (Trust) Authenticate(_ context.Context, c Conn, _ string) error {
	return c.Send(&pgproto3.AuthenticationOk{})
}
