package proxy

import (
	"bufio"
	"errors"
	"io"
	"os"
	"sync"
)

// msgReader is what the framing functions (wire.go) need of a buffered
// reader: bufio.Reader for backends, inBuf for clients.
type msgReader interface {
	io.Reader
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	Buffered() int
	Size() int
}

const (
	// inSmallSize is what an idle client's reader holds: enough for the
	// typical short Query or Bind/Execute/Sync, read in one syscall.
	inSmallSize = 512
	// inBigSize is the most a Peek can hold; larger messages stream.
	inBigSize = 8 * 1024
)

var inPool = sync.Pool{New: func() any { b := make([]byte, inBigSize); return &b }}

// inBuf is a read buffer for a client connection that costs an idle client
// only a small inline array. It behaves like bufio.Reader of size
// inBigSize: when a message does not fit the small array it moves to a
// buffer from inPool, and gives that back the next time it would wait for
// the client with nothing buffered. Slices returned by Peek stay valid until
// the next Peek or Read, as with bufio.Reader.
type inBuf struct {
	r          io.Reader
	small      [inSmallSize]byte
	big        *[]byte // non-nil while buf is from inPool
	buf        []byte
	start, end int
	err        error
	// maxMessage is the longest length a message read through this buffer
	// may claim (max-message-size); peekHeader refuses longer ones. 0: no
	// cap (startup packets have their own, see admit.go).
	maxMessage int
}

func newInBuf(r io.Reader) *inBuf {
	b := &inBuf{r: r}
	b.buf = b.small[:]
	return b
}

// Size is the most a Peek can return.
func (b *inBuf) Size() int { return inBigSize }

// Buffered is how many bytes can be read without a syscall.
func (b *inBuf) Buffered() int { return b.end - b.start }

// Peek returns the next n bytes without consuming them.
func (b *inBuf) Peek(n int) ([]byte, error) {
	if n > inBigSize {
		return nil, bufio.ErrBufferFull
	}
	for b.end-b.start < n {
		if b.err != nil {
			return b.buf[b.start:b.end], b.err
		}
		b.fill(n)
	}
	return b.buf[b.start : b.start+n], nil
}

// fill reads once, making room for at least n buffered bytes first.
func (b *inBuf) fill(n int) {
	if b.start == b.end {
		b.start, b.end = 0, 0
		if b.big != nil {
			// Drained: give the big buffer back before (maybe) waiting.
			inPool.Put(b.big)
			b.big = nil
			b.buf = b.small[:]
		}
	}
	if n > len(b.buf) || (b.end == len(b.buf) && b.big == nil) {
		// Needs more than the small array: move to a big buffer. Also
		// when the small one was filled by one read, as more is likely
		// waiting: read it in one syscall rather than many.
		big := inPool.Get().(*[]byte)
		copy(*big, b.buf[b.start:b.end])
		b.end -= b.start
		b.start = 0
		b.big, b.buf = big, *big
	} else if len(b.buf)-b.start < n || b.end == len(b.buf) {
		copy(b.buf, b.buf[b.start:b.end])
		b.end -= b.start
		b.start = 0
	}
	m, err := b.r.Read(b.buf[b.end:])
	b.end += m
	if err != nil {
		b.err = err
	}
}

// clearTimeout forgets a read deadline's timeout, so reading goes on
// (relayClient's idle-transaction-timeout); other errors stay.
func (b *inBuf) clearTimeout() {
	if errors.Is(b.err, os.ErrDeadlineExceeded) {
		b.err = nil
	}
}

// Discard skips the next n bytes.
func (b *inBuf) Discard(n int) (int, error) {
	done := 0
	for done < n {
		if b.start == b.end {
			if b.err != nil {
				return done, b.err
			}
			b.fill(1)
			continue
		}
		k := min(n-done, b.end-b.start)
		b.start += k
		done += k
	}
	return done, nil
}

// Read implements io.Reader.
func (b *inBuf) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.start == b.end {
		if b.err != nil {
			return 0, b.err
		}
		b.fill(1)
		if b.start == b.end {
			return 0, b.err
		}
	}
	n := copy(p, b.buf[b.start:b.end])
	b.start += n
	return n, nil
}
