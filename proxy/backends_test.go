package proxy

import "testing"

func TestBackendDSN(t *testing.T) {
	const def = "postgres://pool@10.0.0.1:5432/app"
	for _, tc := range []struct{ in, want string }{
		// A DSN without a user is dialled as --backend's user.
		{"postgres://10.0.0.2:5432/app", "postgres://pool@10.0.0.2:5432/app"},
		{"host=10.0.0.2 dbname=app", "host=10.0.0.2 dbname=app user='pool'"},
		// One that names its own keeps it.
		{"postgres://other@10.0.0.2/app", "postgres://other@10.0.0.2/app"},
		{"postgres://10.0.0.2/app?user=other", "postgres://10.0.0.2/app?user=other"},
		{"host=10.0.0.2 user = other", "host=10.0.0.2 user = other"},
	} {
		got, err := backendDSN(tc.in, def)
		if err != nil || got != tc.want {
			t.Errorf("backendDSN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
