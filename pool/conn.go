package pool

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// readBufferSize is the backend read buffer. It bounds how much of a result
// set the proxy holds at once: larger messages are streamed through it.
const readBufferSize = 16 * 1024

// Conn is one backend connection. Exactly one holder uses it at a time:
// between Checkout and Release/Destroy, the holder owns NetConn, Reader and
// State, and the pool does not touch them.
type Conn struct {
	// NetConn is the raw connection, already authenticated (and TLS-wrapped
	// when the backend DSN asks for it).
	NetConn net.Conn
	// Reader buffers reads from NetConn. It belongs to the connection, not
	// to a holder, because bytes it has buffered belong to this server.
	Reader *bufio.Reader
	// PID and SecretKey are the server's cancel key.
	PID       uint32
	SecretKey []byte
	// Params are the server's reported parameters (ParameterStatus), as
	// last seen by whoever read from the connection. Holders keep it current.
	Params map[string]string
	// Statements are the named prepared statements the server holds for
	// whoever uses the connection.
	Statements *Statements
	// State is a label the holder leaves for the next holder, describing
	// the session state on the server (the proxy stores the pin it applied,
	// or "" when it does not know). The pool only carries it.
	State string
	// Role is the role the connection logged in as when it came from
	// CheckoutAs; "" for the Dialer's own login. Set by the pool.
	Role string
	// Tenant names the tenant whose prepared statements the server holds
	// (Statements); the proxy drops them all when another tenant's client
	// takes the connection. The pool only carries it.
	Tenant string

	// key is whom the connection was checked out for (Request.Key), and
	// claimed says it counts in the pool's held[key]: from checkout to
	// Release or Destroy.
	key     string
	claimed bool

	createdAt time.Time
	expiresAt time.Time // zero: never
	idleSince time.Time
	pool      *Pool
}

// newConn wraps an authenticated connection.
func newConn(nc net.Conn, pid uint32, secret []byte, params map[string]string) *Conn {
	if params == nil {
		params = map[string]string{}
	}
	return &Conn{
		Statements: newStatements(DefaultMaxStatements),
		NetConn:    nc,
		Reader:     bufio.NewReaderSize(nc, readBufferSize),
		PID:        pid,
		SecretKey:  secret,
		Params:     params,
		createdAt:  time.Now(),
	}
}

// Cancel asks the server to cancel whatever this connection is running. It
// returns once the server has closed the cancel connection, which PostgreSQL
// does only after it has signalled the backend: a caller that holds the
// connection until Cancel returns knows the cancel cannot land on a query
// that a later holder runs.
func (c *Conn) Cancel(ctx context.Context) error {
	addr := c.NetConn.RemoteAddr()
	var d net.Dialer
	cc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return fmt.Errorf("dial %s for cancel: %w", addr, err)
	}
	defer cc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = cc.SetDeadline(dl)
	}
	msg := pgproto3.CancelRequest{ProcessID: c.PID, SecretKey: c.SecretKey}
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	if _, err := cc.Write(buf); err != nil {
		return fmt.Errorf("send cancel: %w", err)
	}
	// The server answers nothing; EOF means it is done with the request.
	if _, err := io.Copy(io.Discard, cc); err != nil {
		return fmt.Errorf("wait for cancel: %w", err)
	}
	return nil
}

// Age is how long ago the connection was opened.
func (c *Conn) Age() time.Duration { return time.Since(c.createdAt) }

// Pool is the pool that dialled the connection, which Release and Destroy
// return it to; nil for a connection no pool dialled.
func (c *Conn) Pool() *Pool { return c.pool }
