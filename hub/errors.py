"""The domain's errors, and the HTTP status each one answers with (hub.api.errors)."""


class DomainError(Exception):
    """A request the current state of the world refuses (a duplicate, a conflict).
    The API answers 409 with its code."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class NotFound(DomainError):
    """The object a request names does not exist: 404."""

    code = "not_found"
    http_status = 404


class IllegalMove(DomainError):
    """A status move the object's transition map does not allow: 409."""

    code = "illegal_move"
    http_status = 409
