package proxy

import "github.com/pgtenant/pgtenant/internal/pgerr"

// What a client is told when something fails is a pgerr.Error, whoever
// raises it (auth's methods too); its SQLSTATEs come from pgerr's one list.
// The short names below are the proxy's for that type and those codes.
type pgError = pgerr.Error

var (
	fatalf = pgerr.Fatalf
	errorf = pgerr.Errorf
)

const (
	codeProtocolViolation = pgerr.ProtocolViolation
	codeInternalError     = pgerr.InternalError
	codeConnectionFailure = pgerr.ConnectionFailure
	// codeRejectedConnection: the client's own startup values contradict
	// each other about its tenant.
	codeRejectedConnection           = pgerr.SQLServerRejectedEstablishmentOfSQLConnection
	codeTransactionResolutionUnknown = pgerr.TransactionResolutionUnknown
	codeUnknownTenant                = pgerr.InvalidCatalogName
	codeTenantDisabled               = pgerr.ObjectNotInPrerequisiteState
	codeTooManyClients               = pgerr.TooManyConnections
	codeQueryCanceled                = pgerr.QueryCanceled
	codeAdminShutdown                = pgerr.AdminShutdown
	codeFeatureUnsupported           = pgerr.FeatureNotSupported
	codeInsufficientPriv             = pgerr.InsufficientPrivilege
	codeInvalidParameter             = pgerr.InvalidParameterValue
	codeInvalidAuthorization         = pgerr.InvalidAuthorizationSpecification
	codeUndefinedStatement           = pgerr.InvalidSQLStatementName
	codeDuplicateStatement           = pgerr.DuplicatePreparedStatement
	codeDuplicateDatabase            = pgerr.DuplicateDatabase
	codeSyntaxError                  = pgerr.SyntaxError
	codeConfigurationLimit           = pgerr.ConfigurationLimitExceeded
	codeIdleInTransactionTimeout     = pgerr.IdleInTransactionSessionTimeout
)
