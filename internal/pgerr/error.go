// Package pgerr is what pgtenant tells a client that something failed: one
// error type, sent as a PostgreSQL ErrorResponse, and the SQLSTATEs it
// uses (codes.go). proxy and auth both answer clients with it.
package pgerr

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Error is an error a client is told. Severity, Code, Message, Detail and
// Hint go to the client, worded as PostgreSQL words them; Log and Err are
// for pgtenant's log only: they may say, say, that a user does not exist,
// which the client must never learn.
type Error struct {
	Severity string // ERROR or FATAL; "" where the caller decides (auth: FATAL)
	Code     string // SQLSTATE (codes.go)
	Message  string // the primary message
	Detail   string // optional
	Hint     string // optional
	Log      string // why, for the log only
	Err      error  // the internal cause, for the log only
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Message + ": " + e.Detail
	}
	return e.Message
}

// Unwrap returns the internal cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Response is the ErrorResponse the client gets.
func (e *Error) Response() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            e.Severity,
		SeverityUnlocalized: e.Severity,
		Code:                e.Code,
		Message:             e.Message,
		Detail:              e.Detail,
		Hint:                e.Hint,
	}
}

// Fatalf is a FATAL error: the client's session ends.
func Fatalf(code, format string, args ...any) *Error {
	return &Error{Severity: "FATAL", Code: code, Message: fmt.Sprintf(format, args...)}
}

// Errorf is an ERROR: the client's command fails, its session goes on.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Severity: "ERROR", Code: code, Message: fmt.Sprintf(format, args...)}
}
