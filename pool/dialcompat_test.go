package pool

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// A server before PostgreSQL 14 refuses the client_connection_check_interval
// that NewPgDialer adds to the login (42704). The dialer logs in again
// without it, and leaves it out from then on. The server here is a scripted
// one that refuses the parameter as such a server would.
func TestDialWithoutCheckIntervalOnOldServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	logins := make(chan bool, 8) // whether each login carried the parameter
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func(nc net.Conn) {
				defer nc.Close()
				be := pgproto3.NewBackend(nc, nc)
				msg, err := be.ReceiveStartupMessage()
				if err != nil {
					return
				}
				sm, ok := msg.(*pgproto3.StartupMessage)
				if !ok {
					return
				}
				_, has := sm.Parameters["client_connection_check_interval"]
				logins <- has
				if has {
					be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "42704",
						Message: `unrecognized configuration parameter "client_connection_check_interval"`})
					_ = be.Flush()
					return
				}
				be.Send(&pgproto3.AuthenticationOk{})
				be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "13.16"})
				be.Send(&pgproto3.BackendKeyData{ProcessID: 7, SecretKey: []byte{0, 0, 0, 1}})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				_ = be.Flush()
				// The check of role settings finds none; SyncConn: answer
				// its Sync; then hold the connection.
				for {
					m, err := be.Receive()
					if err != nil {
						return
					}
					if _, ok := m.(*pgproto3.Query); ok {
						be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
						be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
						be.Send(&pgproto3.RowDescription{})
						be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 0")})
						be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
						_ = be.Flush()
					}
					if _, ok := m.(*pgproto3.Sync); ok {
						be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
						_ = be.Flush()
					}
				}
			}(nc)
		}
	}()
	d, err := NewPgDialer("postgres://app@" + ln.Addr().String() + "/db?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		c, err := d.Dial(ctx)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		_ = c.NetConn.Close()
	}
	var got []bool
	for len(logins) > 0 {
		got = append(got, <-logins)
	}
	// The first login with the parameter, refused; then without it, twice.
	if len(got) != 3 || !got[0] || got[1] || got[2] {
		t.Fatalf("logins carried the parameter: %v, want [true false false]", got)
	}
}
