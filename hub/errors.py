class DomainError(Exception):
    """A request the current state of the world refuses (an illegal status move,
    a duplicate, a conflict). The API turns it into a 409 with its code."""

    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code
