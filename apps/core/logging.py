import logging

from .context import request_id_var


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every log record so one request's lines can be joined."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True
