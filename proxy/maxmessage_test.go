package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
)

// peekHeader refuses a client length over the reader's max-message-size
// before reading the body; a server's reader has no cap.
func TestPeekHeaderMaxMessage(t *testing.T) {
	header := func(length uint32) []byte {
		h := []byte{'Q', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(h[1:], length)
		return h
	}
	tests := []struct {
		name    string
		length  uint32
		max     int
		tooLong bool
	}{
		{"at the cap", 1 << 20, 1 << 20, false},
		{"one over", 1<<20 + 1, 1 << 20, true},
		{"claims 2 GiB-1", 0x7fffffff, 64 << 20, true},
		{"no cap", 0x7fffffff, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newInBuf(bytes.NewReader(header(tt.length)))
			r.maxMessage = tt.max
			typ, n, err := peekHeader(r)
			var tl *tooLargeError
			switch {
			case tt.tooLong && (!errors.As(err, &tl) || !errors.Is(err, errMalformed)):
				t.Fatalf("err %v, want a tooLargeError that is errMalformed", err)
			case tt.tooLong && !strings.Contains(err.Error(), "max-message-size"):
				t.Fatalf("error %q does not name max-message-size", err)
			case !tt.tooLong && (err != nil || typ != 'Q' || n != int(tt.length)-4):
				t.Fatalf("got %q %d %v, want 'Q' %d", typ, n, err, tt.length-4)
			}
		})
	}
	be := bufio.NewReader(bytes.NewReader(header(0x7fffffff)))
	if _, n, err := peekHeader(be); err != nil || n != 0x7fffffff-4 {
		t.Fatalf("server reader: %d %v; replies are not capped", n, err)
	}
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A message held whole (body) is held as far as it has arrived: a client
// claiming 1 GiB and sending 100 KB costs about 100 KB.
func TestBodyAllocatesWhatArrived(t *testing.T) {
	const claimed, sent = 1 << 30, 100_000
	in := append([]byte{'Q', 0, 0, 0, 0}, bytes.Repeat([]byte{'x'}, sent)...)
	binary.BigEndian.PutUint32(in[1:], claimed+4)
	var err error
	got := allocated(func() {
		s := &session{cr: newInBuf(iotest.OneByteReader(bytes.NewReader(in)))}
		m := clientMsg{typ: 'Q', n: claimed}
		_, err = s.body(&m)
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body of a message cut short: %v, want io.ErrUnexpectedEOF", err)
	}
	if got > 4*sent+64<<10 {
		t.Fatalf("%d bytes arrived of %d claimed: %d bytes allocated", sent, claimed, got)
	}
}

func TestReadWhole(t *testing.T) {
	for _, n := range []int{0, 1, readWholeFirst, readWholeFirst + 1, 100_000} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i)
		}
		got, err := readWhole(iotest.HalfReader(bytes.NewReader(append(want, "after"...))), n)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("n=%d: %d bytes, %v", n, len(got), err)
		}
		if cap(got) > max(2*n, readWholeFirst) {
			t.Errorf("n=%d: capacity %d", n, cap(got))
		}
	}
	if _, err := readWhole(bytes.NewReader([]byte("short")), 10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut short: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := readWhole(iotest.ErrReader(syscall.ECONNRESET), 10); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read error: %v", err)
	}
}

// A password message is framed like any other: over max-message-size it is
// refused with 08P01 before its body is read.
func TestReceivePasswordMaxMessage(t *testing.T) {
	h := []byte{'p', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:], 100_000_000)
	s := &session{cr: newInBuf(bytes.NewReader(h))}
	s.cr.maxMessage = 1 << 20
	_, err := s.ReceivePassword()
	var pe *pgError
	if !errors.As(err, &pe) || pe.Code != codeProtocolViolation || !strings.Contains(pe.Message, "max-message-size") {
		t.Fatalf("got %v, want 08P01 naming max-message-size", err)
	}
}
