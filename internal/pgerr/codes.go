package pgerr

// The SQLSTATEs pgtenant itself tells clients, and the ones of the server's
// it reads, in one list. The names are PostgreSQL's condition names
// (src/backend/utils/errcodes.txt) in Go case, as in
// github.com/jackc/pgerrcode, which the module proxy does not serve here;
// the comments say what pgtenant uses each for.
const (
	// Class 08: connection exception.
	ConnectionFailure                             = "08006" // a backend or a lookup failed
	SQLServerRejectedEstablishmentOfSQLConnection = "08004" // conflicting tenant claims
	TransactionResolutionUnknown                  = "08007" // a backend lost with a command in flight
	ProtocolViolation                             = "08P01" // malformed messages
	// Class 0A: feature not supported.
	FeatureNotSupported = "0A000" // refused statements, settings, SCRAM extensions
	// Class 22: data exception.
	InvalidParameterValue = "22023" // a bad startup parameter
	// Class 25: invalid transaction state.
	IdleInTransactionSessionTimeout = "25P03" // --idle-transaction-timeout
	// Class 26 and 42: prepared statements, privileges, syntax.
	InvalidSQLStatementName    = "26000" // the server's: no such prepared statement
	DuplicatePreparedStatement = "42P05" // the server's: statement already exists
	DuplicateDatabase          = "42P04" // CREATE DATABASE naming an existing tenant (a test runner's --keepdb)
	InsufficientPrivilege      = "42501" // search_path outside the tenant, reserved parameters, CREATE/DROP DATABASE
	SyntaxError                = "42601" // the server's: what a Parse refused by pgtenant fails with; unknown console commands
	InvalidName                = "42602" // a malformed tenant name given to the console
	UndefinedObject            = "42704" // the console's KILL_CLIENT of no such client
	// Class 28: invalid authorization specification.
	InvalidAuthorizationSpecification = "28000" // no user, user not allowed on the tenant
	InvalidPassword                   = "28P01" // wrong password, unknown user
	// Class 3D: invalid catalog name.
	InvalidCatalogName = "3D000" // an unknown tenant, as for an unknown database
	// Class 53: insufficient resources.
	TooManyConnections         = "53300" // max-client-conn, the auth failure limiter, no backend for a startup
	ConfigurationLimitExceeded = "53400" // max-client-statements, max-client-statement-bytes
	// Class 55: object not in prerequisite state.
	ObjectNotInPrerequisiteState = "55000" // a disabled tenant
	// Class 57: operator intervention.
	QueryCanceled = "57014" // a statement's pool wait timed out, like statement_timeout
	AdminShutdown = "57P01" // pgtenant shuts down
	// Class F0: configuration file error.
	ConfigFileError = "F0000" // the console's RELOAD failed
	// Class XX: internal error.
	InternalError = "XX000" // pgtenant itself failed
)
