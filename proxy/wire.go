package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Message framing at message boundaries. The relay peeks at the 5-byte
// header (type, length), decides what it must know, and copies the bytes on
// without re-encoding them. A message that fits the read buffer is written
// from the buffer in one piece; a larger one (a wide DataRow, a big CopyData)
// is streamed through it, so the proxy never holds a whole result.

// maxDecoded bounds messages the relay decodes rather than copies
// (ErrorResponse, ParameterStatus, ReadyForQuery, ...). Legitimate ones are
// tiny; a bigger one means a confused peer.
const maxDecoded = 64 * 1024

var errMalformed = errors.New("malformed message length")

// tooLargeError is a client message whose length is over max-message-size.
// It is an errMalformed: the client hears 08P01, as for any bad length.
type tooLargeError struct {
	typ        byte
	length     int32 // as claimed
	maxMessage int
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("message type %q claims %d bytes, over max-message-size %d", e.typ, e.length, e.maxMessage)
}

func (e *tooLargeError) Unwrap() error { return errMalformed }

// peekHeader returns the next message's type and body length without
// consuming anything. It is where every client message's length is first
// seen, so it is where a client reader's max-message-size (inBuf.maxMessage)
// is enforced: before a byte of the body is read or a buffer allocated for
// it, whether the message will be held or streamed.
func peekHeader(r msgReader) (typ byte, bodyLen int, err error) {
	h, err := r.Peek(5)
	if err != nil {
		return 0, 0, err
	}
	n := int32(binary.BigEndian.Uint32(h[1:5]))
	if n < 4 {
		return 0, 0, headerError(h[0], n, 0)
	}
	if ib, ok := r.(*inBuf); ok && ib.maxMessage > 0 && int(n) > ib.maxMessage {
		return 0, 0, headerError(h[0], n, ib.maxMessage)
	}
	return h[0], int(n) - 4, nil
}

// headerError is peekHeader's error for a length below 4, or above
// maxMessage when that is set. It is a function of its own, never inlined,
// so that building the error takes no room in peekHeader's frame: an idle
// client's goroutine is parked below peekHeader, and its stack must stay
// within 2 KiB (see session.handle).
//
//go:noinline
func headerError(typ byte, n int32, maxMessage int) error {
	if n < 4 {
		return fmt.Errorf("%w: type %q, length %d", errMalformed, typ, n)
	}
	return &tooLargeError{typ: typ, length: n, maxMessage: maxMessage}
}

// readWholeFirst is the buffer readWhole starts with. It then doubles as
// bytes arrive.
const readWholeFirst = 512

// readWhole reads n bytes from r into a new buffer that grows as they
// arrive: it never holds more than twice what came (or readWholeFirst), so a
// length a client claims costs nothing until the client sends the bytes.
// Doubling keeps the copying linear in n. Errors are io.ReadFull's: io.EOF
// when nothing came, io.ErrUnexpectedEOF when part did.
func readWhole(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, readWholeFirst))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// copyError tells which side failed while a message was being copied: the
// relay must react differently to a vanished client and a dead server.
type copyError struct {
	write bool
	err   error
}

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// forward copies the message whose header was just peeked from r to w.
func forward(r msgReader, w *outBuf, bodyLen int) error {
	total := 5 + bodyLen
	if total <= r.Size() {
		b, err := r.Peek(total)
		if err != nil {
			return &copyError{err: err}
		}
		if _, err := w.Write(b); err != nil {
			return &copyError{write: true, err: err}
		}
		_, _ = r.Discard(total)
		return nil
	}
	h, _ := r.Peek(5) // already peeked by the caller: cannot fail
	if _, err := w.Write(h); err != nil {
		return &copyError{write: true, err: err}
	}
	_, _ = r.Discard(5)
	return streamBody(r, w, bodyLen)
}

// discard drops the message whose header was just peeked.
func discard(r msgReader, bodyLen int) error {
	_, err := r.Discard(5 + bodyLen)
	return err
}

// readBody consumes the peeked message and returns its body, valid only
// until the next read from r.
func readBody(r msgReader, bodyLen int) ([]byte, error) {
	if bodyLen > maxDecoded || 5+bodyLen > r.Size() {
		return nil, fmt.Errorf("%w: %d-byte message where a small one is expected", errMalformed, bodyLen)
	}
	b, err := r.Peek(5 + bodyLen)
	if err != nil {
		return nil, err
	}
	_, _ = r.Discard(5 + bodyLen)
	return b[5:], nil
}

// writeMsg encodes one message into w.
func writeMsg(w io.Writer, msg pgproto3.Message) error {
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

var (
	rfqIdle   = []byte{'Z', 0, 0, 0, 5, 'I'}
	rfqInTx   = []byte{'Z', 0, 0, 0, 5, 'T'}
	rfqFailed = []byte{'Z', 0, 0, 0, 5, 'E'}
)

// readyForQuery is the encoded ReadyForQuery for a transaction status, as
// the server sent it.
func readyForQuery(status byte) []byte {
	switch status {
	case 'I':
		return rfqIdle
	case 'T':
		return rfqInTx
	case 'E':
		return rfqFailed
	}
	return []byte{'Z', 0, 0, 0, 5, status}
}

// streamBody copies the next left bytes of r to w through r's buffer.
func streamBody(r msgReader, w *outBuf, left int) error {
	for left > 0 {
		chunk, err := r.Peek(min(left, r.Size()))
		if len(chunk) == 0 && err != nil {
			return &copyError{err: err}
		}
		if _, werr := w.Write(chunk); werr != nil {
			return &copyError{write: true, err: werr}
		}
		_, _ = r.Discard(len(chunk))
		left -= len(chunk)
	}
	return nil
}
