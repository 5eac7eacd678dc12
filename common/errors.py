"""Typed errors of lmdock.

Domain code raises these; each class names its gRPC status (`status`), which the interceptors
of `lmdock.common.grpc_errors` apply on every server and turn back into the class on every
client (`error_for_status`); the CLI prints the message. Messages say what was wrong and,
where it helps, what to do.
"""

from __future__ import annotations


class LmdockError(Exception):
    """Base of every error lmdock raises on purpose."""

    #: Name of the grpc.StatusCode member this error maps to.
    status = "UNKNOWN"


class InvalidArgument(LmdockError, ValueError):
    """`param` names the request field at fault, where there is one (the OpenAI API's error `param`)."""

    status = "INVALID_ARGUMENT"

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotFound(LmdockError):
    status = "NOT_FOUND"


class AlreadyExists(LmdockError):
    status = "ALREADY_EXISTS"


class PermissionDenied(LmdockError):
    status = "PERMISSION_DENIED"


class Unauthenticated(LmdockError):
    status = "UNAUTHENTICATED"


class ResourceExhausted(LmdockError):
    status = "RESOURCE_EXHAUSTED"


class FailedPrecondition(LmdockError):
    status = "FAILED_PRECONDITION"


class DeadlineExceeded(LmdockError):
    """A call ran past a limit the server sets (a stream idle or open for too long)."""

    status = "DEADLINE_EXCEEDED"


class Unavailable(LmdockError):
    """The other end does not answer (refused, unresolvable, down); the message says which end."""

    status = "UNAVAILABLE"


class Cancelled(LmdockError):
    """Work stopped because its caller asked (Ctrl-C, `lmdock task remove`) or the daemon is stopping."""

    status = "CANCELLED"


class IntegrityError(LmdockError):
    """Bytes or signatures that do not match what they claim to be."""

    status = "DATA_LOSS"


class BudgetExceeded(ResourceExhausted):
    """A release would exceed a data set's privacy budget; nothing was sent."""


class ProfileMismatch(FailedPrecondition):
    """The market's spec profile cannot be reproduced locally; no spec is computed."""


_BY_STATUS: dict[str, type[LmdockError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        FailedPrecondition,
        DeadlineExceeded,
        Unavailable,
        Cancelled,
        IntegrityError,
    )
}


def error_for_status(status: str, message: str) -> LmdockError:
    """The typed error for a remote status name (e.g. a gRPC code), for client-side handling."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        err = LmdockError(message)
        err.status = status
        return err
    return cls(message)
