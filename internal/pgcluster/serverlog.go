package pgcluster

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// serverLog is the server's log: server.log in the cluster directory plus an
// optional copy to the caller's writer.
//
// The postmaster writes to its stderr, which is the write end of a pipe made by
// attach; one goroutine per pipe copies the read end here. The postmaster and
// every backend it forks inherit that write end, so a copy goroutine ends only
// once all of them have exited: drain waits for that.
type serverLog struct {
	path string

	mu    sync.Mutex // serialises writes to file and extra
	file  *os.File
	extra io.Writer

	copiers sync.WaitGroup
	readsMu sync.Mutex
	reads   []*os.File // read ends still being copied; drain closes them on timeout
}

func newServerLog(path string, extra io.Writer) (*serverLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cluster: create server log: %w", err)
	}
	return &serverLog{path: path, file: f, extra: extra}, nil
}

// Write appends p to the log file and to the extra writer. An error from the
// extra writer is ignored: a caller's broken log copy must not stop the copy
// into the file.
func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.file.Write(p); err != nil {
		return 0, err
	}
	if l.extra != nil {
		l.extra.Write(p)
	}
	return len(p), nil
}

// attach returns the write end of a new pipe whose output goes to the log.
// The caller hands it to a child process and then closes its own copy.
func (l *serverLog) attach() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("cluster: server log pipe: %w", err)
	}
	l.readsMu.Lock()
	l.reads = append(l.reads, r)
	l.readsMu.Unlock()
	l.copiers.Add(1)
	go func() {
		defer l.copiers.Done()
		defer r.Close()
		io.Copy(l, r) // ends at EOF, or with an error once drain closes r
	}()
	return w, nil
}

// drain waits up to timeout for every copy goroutine to reach EOF, then cuts
// off the ones still running (a process that outlived its stop) and waits for
// them to return.
func (l *serverLog) drain(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		l.copiers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		l.readsMu.Lock()
		for _, r := range l.reads {
			r.Close()
		}
		l.readsMu.Unlock()
		<-done
	}
	l.readsMu.Lock()
	l.reads = nil
	l.readsMu.Unlock()
}

// size returns the log's current length, the offset at which the next write
// lands.
func (l *serverLog) size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, err := l.file.Stat()
	if err != nil {
		return 0
	}
	return info.Size()
}

// read returns the log from byte offset from to its current end.
func (l *serverLog) read(from int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// close closes the log file; call it after drain.
func (l *serverLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.file.Close(); err != nil {
		return fmt.Errorf("cluster: close server log: %w", err)
	}
	return nil
}
