package proxy

import (
	"io"
	"sync"
)

// outBufSize is the size of a write buffer while it holds data.
const outBufSize = 8 * 1024

// bufPool holds empty write buffers shared by all sessions.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, outBufSize); return &b }}

// outBuf buffers writes to a connection, like bufio.Writer, but gives its
// memory back to bufPool whenever a Flush empties it: an idle client, which
// is most of them in a pooler, then holds no write buffer at all. Writes are
// still batched up to a flush point, so the number of syscalls is the same.
//
// Like bufio.Writer it is used by one goroutine at a time, and an error is
// sticky: once a write to w fails, every later Write and Flush returns it.
type outBuf struct {
	w   io.Writer
	buf *[]byte // nil while empty
	err error
}

// Write implements io.Writer.
func (o *outBuf) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.buf == nil {
		o.buf = bufPool.Get().(*[]byte)
	}
	b := *o.buf
	if len(b)+len(p) > cap(b) {
		if err := o.flush(); err != nil {
			return 0, err
		}
		if len(p) >= outBufSize {
			// Too big to buffer: write it through.
			n, err := o.w.Write(p)
			if err != nil {
				o.err = err
			}
			return n, err
		}
		if o.buf == nil {
			o.buf = bufPool.Get().(*[]byte)
		}
		b = *o.buf
	}
	*o.buf = append(b, p...)
	return len(p), nil
}

// Flush writes what is buffered and returns the buffer to the pool.
func (o *outBuf) Flush() error {
	if o.err != nil {
		return o.err
	}
	return o.flush()
}

func (o *outBuf) flush() error {
	if o.buf == nil {
		return nil
	}
	b := *o.buf
	var err error
	if len(b) > 0 {
		if _, err = o.w.Write(b); err != nil {
			o.err = err
		}
	}
	*o.buf = b[:0]
	bufPool.Put(o.buf)
	o.buf = nil
	return err
}

// Buffered is how many bytes wait for a Flush.
func (o *outBuf) Buffered() int {
	if o.buf == nil {
		return 0
	}
	return len(*o.buf)
}

// Reset discards anything buffered and any error, and writes to w.
func (o *outBuf) Reset(w io.Writer) {
	if o.buf != nil {
		*o.buf = (*o.buf)[:0]
		bufPool.Put(o.buf)
		o.buf = nil
	}
	o.w, o.err = w, nil
}
