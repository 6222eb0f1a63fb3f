// Package proxy owns the life of a client connection:
//
//	accept ─▶ admit ─▶ authenticate ─▶ resolve tenant ─▶ relay ◀──▶ pool
//	server.go  admit.go   session.go(auth)  session.go(router)  relay.go, backend.go
//
// # Files
//
//   - server.go: accept loop, max-client-conn, shutdown, cancel keys.
//   - admit.go: the startup packet (length cap, SSLRequest answered with TLS
//     when a certificate is set, GSSENCRequest declined, CancelRequest
//     forwarded), startup `options` and the pgtenant.tenant option.
//   - tls.go: TLS with clients, negotiated and PostgreSQL 17's direct TLS
//     (ALPN postgresql), certificate reload.
//   - setup.go: the authentication method and the files reread on SIGHUP.
//   - session.go: authentication, routing, tenant access, checking the
//     client's parameters on a backend, and what the client is told at
//     startup.
//   - pin.go: the SQL that puts a backend into a client's session state.
//   - tracker.go: what pgtenant knows of the client's session whatever
//     backend serves it (no I/O, no locks); its rules live in state.go (the
//     client's settings: classify, settle, RESET returns to the client's
//     defaults, search_path is the tenant boundary) and stmt.go (named
//     statements across backends).
//   - link.go: the backend serving the client and the link's typed state
//     (detached, skipping, attached, pinned, draining, closing, failing,
//     lost), changed by one function that checks each move; attaching and
//     the pin, the safe point and the release, cancel.
//   - replies.go: the reply model, what every message sent to a backend
//     will be answered with (skip to Sync after an error, COPY's end).
//   - relay.go: the client loop (read, inspect, route, send).
//   - account.go: what the server owes for each message sent, and what
//     pgtenant sends with it.
//   - backend.go: the backend loop (read a reply, decide whose it is,
//     write it to the client).
//   - loss.go: a backend that dies or cannot be trusted, a client that
//     leaves.
//   - startup.go: connections still in startup, and their limits.
//   - wire.go: framing at message boundaries.
//   - errors.go: the errors pgtenant sends (internal/pgerr).
//
// # Relay
//
// The relay forwards whole messages and decodes only what it must look at:
// ReadyForQuery (safe points), ErrorResponse (to notice a dying server and
// errors in pgtenant's own queries), ParameterStatus (to keep a backend's
// reported parameters current), CopyInResponse (the server ignores Sync
// while it reads COPY data). Everything else is copied through fixed
// buffers, large messages in pieces, and written out only at flush points:
// when the side being read has nothing more buffered.
//
// # Errors a client can see
//
// 28P01 wrong password (or unknown user: the same answer), 28000 user not
// granted the tenant, or TLS required, 08004 startup values naming two
// tenants, 3D000 unknown tenant, 55000 disabled tenant, 53300
// max-client-conn reached (or too many failed logins queued, or a new client
// that needed a server connection to start and got none within
// query-wait-timeout), 57014 a statement that got no server connection
// within query-wait-timeout (the session goes on), 08006
// backend unreachable or lost, 08P01 protocol violation, 57P01 shutdown,
// 42501 a startup parameter pgtenant owns (search_path, role).
package proxy
