// Package auth owns how a client proves who it is to pgtenant.
//
// A client's password exchange never reaches the backend: the pool logs in
// with its own credentials, and a Method here decides whether the client may
// in. For now the only method is Trust; SCRAM-SHA-256, md5 and cleartext come
// with their own issue and plug in behind the same Method interface.
package auth
