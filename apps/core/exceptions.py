"""The one domain exception type. Services raise it; the API handler and views map it to responses."""

from typing import Any


class ApplicationError(Exception):
    """A domain error with a stable machine-readable code and an HTTP status the edges may use."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        status_code: int | None = None,
        fields: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.fields = fields or {}
        self.extra = extra or {}


class ServiceUnavailable(ApplicationError):
    """The request is fine but something it needs (model, database) is not available now."""

    status_code = 503
