package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5/pgproto3"
)

// wireMsg frames a body as a typed protocol message.
func wireMsg(typ byte, body string) []byte {
	b := binary.BigEndian.AppendUint32([]byte{typ}, uint32(len(body)+4))
	return append(b, body...)
}

// header is a type byte and a raw length field, for lengths that lie.
func header(typ byte, n uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{typ}, n)
}

func TestPeekHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		bodyLen int
		err     error
	}{
		{name: "ReadyForQuery", in: wireMsg('Z', "I"), typ: 'Z', bodyLen: 1},
		{name: "empty body", in: wireMsg('S', ""), typ: 'S', bodyLen: 0},
		{name: "body not yet arrived", in: header('D', 1000), typ: 'D', bodyLen: 996},
		{name: "huge length", in: header('d', 0x7fffffff), typ: 'd', bodyLen: 0x7fffffff - 4},
		{name: "length 3", in: header('Q', 3), err: errMalformed},
		{name: "length 0", in: header('Q', 0), err: errMalformed},
		{name: "negative length", in: header('Q', 0x80000000), err: errMalformed},
		{name: "length -1", in: header('Q', 0xffffffff), err: errMalformed},
		{name: "short header", in: []byte{'Q', 0, 0, 0}, err: io.EOF},
		{name: "empty stream", in: nil, err: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(tt.in))
			typ, n, err := peekHeader(r)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("peekHeader error = %v, want %v", err, tt.err)
				}
			} else {
				if err != nil {
					t.Fatalf("peekHeader: %v", err)
				}
				if typ != tt.typ || n != tt.bodyLen {
					t.Fatalf("peekHeader = %q, %d; want %q, %d", typ, n, tt.typ, tt.bodyLen)
				}
			}
			// A peek consumes nothing, whatever it found.
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, tt.in) {
				t.Fatalf("peekHeader consumed input: %q left of %q", rest, tt.in)
			}
		})
	}
}

// failingWriter fails every write.
type failingWriter struct{}

var errWriteFailed = errors.New("write failed")

func (failingWriter) Write([]byte) (int, error) { return 0, errWriteFailed }

func TestForward(t *testing.T) {
	small := wireMsg('D', "small row")
	large := wireMsg('D', strings.Repeat("0123456789", 20)) // 205 bytes: 13 times a 16-byte buffer
	const tail = "Z\x00\x00\x00\x05I"

	tests := []struct {
		name   string
		msg    []byte
		reader func(io.Reader) io.Reader
		size   int
	}{
		{name: "small message from the buffer", msg: small, size: 4096},
		{name: "message exactly the buffer size", msg: wireMsg('D', strings.Repeat("x", 11)), size: 16},
		{name: "message one byte over the buffer", msg: wireMsg('D', strings.Repeat("x", 12)), size: 16},
		{name: "large message streamed", msg: large, size: 16},
		{name: "large message in one-byte reads", msg: large, size: 16, reader: iotest.OneByteReader},
		{name: "large message in half reads", msg: large, size: 16, reader: iotest.HalfReader},
		{name: "empty body", msg: wireMsg('1', ""), size: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src io.Reader = bytes.NewReader(append(append([]byte{}, tt.msg...), tail...))
			if tt.reader != nil {
				src = tt.reader(src)
			}
			r := bufio.NewReaderSize(src, tt.size)
			var out bytes.Buffer
			w := &outBuf{w: &out}

			_, n, err := peekHeader(r)
			if err != nil {
				t.Fatalf("peekHeader: %v", err)
			}
			if err := forward(r, w, n); err != nil {
				t.Fatalf("forward: %v", err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tt.msg) {
				t.Fatalf("forwarded %q, want %q", out.Bytes(), tt.msg)
			}
			// Nothing beyond the message was consumed: the next message
			// is still there, whole.
			rest, _ := io.ReadAll(r)
			if string(rest) != tail {
				t.Fatalf("left %q after forward, want %q", rest, tail)
			}
		})
	}
}

func TestForwardErrors(t *testing.T) {
	t.Run("truncated small message", func(t *testing.T) {
		in := wireMsg('D', "0123456789")[:8]
		r := bufio.NewReaderSize(bytes.NewReader(in), 64)
		var out bytes.Buffer
		w := &outBuf{w: &out}
		_, n, _ := peekHeader(r)
		err := forward(r, w, n)
		var ce *copyError
		if !errors.As(err, &ce) || ce.write || !errors.Is(err, io.EOF) {
			t.Fatalf("forward error = %#v, want a read-side copyError wrapping EOF", err)
		}
	})
	t.Run("truncated streamed message", func(t *testing.T) {
		msg := wireMsg('D', strings.Repeat("x", 100))
		r := bufio.NewReaderSize(bytes.NewReader(msg[:60]), 16)
		var out bytes.Buffer
		w := &outBuf{w: &out}
		_, n, _ := peekHeader(r)
		err := forward(r, w, n)
		var ce *copyError
		if !errors.As(err, &ce) || ce.write || !errors.Is(err, io.EOF) {
			t.Fatalf("forward error = %#v, want a read-side copyError wrapping EOF", err)
		}
		_ = w.Flush()
		if !bytes.Equal(out.Bytes(), msg[:60]) {
			t.Fatalf("forwarded %q before failing, want the %d bytes that arrived", out.Bytes(), 60)
		}
	})
	t.Run("write fails while streaming", func(t *testing.T) {
		// Larger than outBufSize: the buffer fills and is flushed mid-stream.
		msg := wireMsg('D', strings.Repeat("x", outBufSize+800))
		r := bufio.NewReaderSize(bytes.NewReader(msg), 16)
		w := &outBuf{w: failingWriter{}}
		_, n, _ := peekHeader(r)
		err := forward(r, w, n)
		var ce *copyError
		if !errors.As(err, &ce) || !ce.write || !errors.Is(err, errWriteFailed) {
			t.Fatalf("forward error = %#v, want a write-side copyError", err)
		}
	})
	t.Run("write fails for a buffered message", func(t *testing.T) {
		msg := wireMsg('D', strings.Repeat("x", outBufSize+800))
		r := bufio.NewReaderSize(bytes.NewReader(msg), 2*outBufSize)
		w := &outBuf{w: failingWriter{}} // the message is bigger than its buffer: written through
		_, n, _ := peekHeader(r)
		err := forward(r, w, n)
		var ce *copyError
		if !errors.As(err, &ce) || !ce.write || !errors.Is(err, errWriteFailed) {
			t.Fatalf("forward error = %#v, want a write-side copyError", err)
		}
	})
}

func TestReadBody(t *testing.T) {
	const tail = "next"
	tests := []struct {
		name string
		in   []byte
		size int
		want string
		err  error // errors.Is target; nil means success
	}{
		{name: "small", in: wireMsg('E', "SERROR\x00"), size: 4096, want: "SERROR\x00"},
		{name: "empty body", in: wireMsg('1', ""), size: 16, want: ""},
		{name: "fills the buffer exactly", in: wireMsg('S', strings.Repeat("p", 11)), size: 16, want: strings.Repeat("p", 11)},
		{name: "larger than the buffer", in: wireMsg('S', strings.Repeat("p", 12)), size: 16, err: errMalformed},
		{name: "over maxDecoded", in: header('E', maxDecoded+5), size: 2 * maxDecoded, err: errMalformed},
		{name: "truncated", in: wireMsg('E', "SERROR\x00")[:7], size: 4096, err: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append(append([]byte{}, tt.in...), tail...)
			if tt.err == io.EOF {
				in = tt.in // nothing follows a truncated message
			}
			r := bufio.NewReaderSize(bytes.NewReader(in), tt.size)
			_, n, err := peekHeader(r)
			if err != nil {
				t.Fatalf("peekHeader: %v", err)
			}
			body, err := readBody(r, n)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("readBody error = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("readBody: %v", err)
			}
			if string(body) != tt.want {
				t.Fatalf("readBody = %q, want %q", body, tt.want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tail {
				t.Fatalf("left %q after readBody, want %q", rest, tail)
			}
		})
	}
}

func TestDiscard(t *testing.T) {
	t.Run("whole message", func(t *testing.T) {
		in := append(wireMsg('N', strings.Repeat("n", 100)), "next"...)
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		_, n, _ := peekHeader(r)
		if err := discard(r, n); err != nil {
			t.Fatalf("discard: %v", err)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "next" {
			t.Fatalf("left %q after discard, want %q", rest, "next")
		}
	})
	t.Run("truncated", func(t *testing.T) {
		in := wireMsg('N', strings.Repeat("n", 100))[:50]
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		_, n, _ := peekHeader(r)
		if err := discard(r, n); !errors.Is(err, io.EOF) {
			t.Fatalf("discard error = %v, want EOF", err)
		}
	})
}

func TestReadyForQueryEncoding(t *testing.T) {
	for _, status := range []byte{'I', 'T', 'E', 'X'} {
		b := readyForQuery(status)
		want, err := (&pgproto3.ReadyForQuery{TxStatus: status}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("readyForQuery(%q) = %q, want %q", status, b, want)
		}
	}
}

func TestWriteMsgAndErrorResponse(t *testing.T) {
	var buf bytes.Buffer
	e := fatalf(codeUnknownTenant, "tenant %q does not exist", "acme")
	if err := writeMsg(&buf, e.Response()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&buf)
	typ, n, err := peekHeader(r)
	if err != nil || typ != 'E' {
		t.Fatalf("peekHeader = %q, %v", typ, err)
	}
	body, err := readBody(r, n)
	if err != nil {
		t.Fatal(err)
	}
	var got pgproto3.ErrorResponse
	if err := got.Decode(body); err != nil {
		t.Fatal(err)
	}
	if got.Severity != "FATAL" || got.SeverityUnlocalized != "FATAL" || got.Code != "3D000" || got.Message != `tenant "acme" does not exist` {
		t.Fatalf("ErrorResponse = %+v", got)
	}
}
