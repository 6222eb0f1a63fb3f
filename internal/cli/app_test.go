package cli

import (
	"syscall"
	"testing"
	"time"
)

// A SIGHUP to the process reaches the reload channel that serve and demo
// hand to proxy.WithReload, every time. Were it not handled, the signal
// would kill the test binary.
func TestNotifyReload(t *testing.T) {
	reload, stop := notifyReload()
	defer stop()
	hangup := func() {
		t.Helper()
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	wait := func() {
		t.Helper()
		select {
		case <-reload:
		case <-time.After(10 * time.Second):
			t.Fatal("no reload within 10s of SIGHUP")
		}
	}
	hangup()
	wait()
	hangup()
	wait()
}
