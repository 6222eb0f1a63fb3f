package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// migrateProgress shows a migrate run as it goes. On a terminal it keeps one
// status line (a bar, tenants done and failed of the total, elapsed time,
// ETA) redrawn in place at most ten times a second, and prints only
// failures above it; otherwise (a pipe, a file, a CI log) it prints one line
// per tenant as it finishes, which reads well in a log and greps well.
// Either way a summary line ends the run.
type migrateProgress struct {
	w     io.Writer
	tty   bool
	total int
	start time.Time

	mu       sync.Mutex
	finished int // tenants done, failed included
	failed   int
	upToDate int
	dirty    bool // the status line is on screen and must be cleared before a line is printed

	stop chan struct{}
	wg   sync.WaitGroup
}

// redrawEvery bounds how often the terminal line is redrawn.
const redrawEvery = 100 * time.Millisecond

// isTerminal reports whether w is a terminal (a character device). It needs
// no dependency: golang.org/x/term is not one of pgtenant's.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newMigrateProgress(w io.Writer, total int, start time.Time) *migrateProgress {
	p := &migrateProgress{w: w, tty: isTerminal(w), total: total, start: start, stop: make(chan struct{})}
	if p.tty && total > 0 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(redrawEvery)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					p.mu.Lock()
					p.draw()
					p.mu.Unlock()
				}
			}
		}()
	}
	return p
}

// done records a tenant's result.
func (p *migrateProgress) done(r migrateResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished++
	switch {
	case r.Err != nil:
		p.failed++
	case r.Applied == 0:
		p.upToDate++
	}
	if !p.tty || r.Err != nil {
		p.clear()
		fmt.Fprintln(p.w, r.line())
	}
}

// finish stops the redraws and prints the summary.
func (p *migrateProgress) finish() {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.w, "%d tenant(s): %d migrated, %d already up to date, %d failed, %d not started; %s\n",
		p.total, p.finished-p.failed-p.upToDate, p.upToDate, p.failed, p.total-p.finished,
		time.Since(p.start).Round(time.Millisecond))
}

// clear removes the status line, if it is drawn, so that a line can be
// printed in its place.
func (p *migrateProgress) clear() {
	if p.dirty {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.dirty = false
	}
}

// draw redraws the status line in place.
func (p *migrateProgress) draw() {
	const width = 30
	elapsed := time.Since(p.start)
	filled := 0
	if p.total > 0 {
		filled = width * p.finished / p.total
	}
	eta := "?"
	if p.finished > 0 {
		left := time.Duration(float64(elapsed) / float64(p.finished) * float64(p.total-p.finished))
		eta = left.Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d tenants, %d failed, %s elapsed, ETA %s\x1b[K",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.finished, p.total, p.failed,
		elapsed.Round(100*time.Millisecond), eta)
	p.dirty = true
}
