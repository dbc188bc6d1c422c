"""Per-request context (request id) that logging and the audit writer read without passing it everywhere."""

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
