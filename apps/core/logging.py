import logging
import re

from .context import request_id_var


class RequestIdFilter(logging.Filter):
    """Adds the current request id to every log record so one request's lines can be joined."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactQueryStringFilter(logging.Filter):
    """Access-log lines carry the request line; query strings can hold patient identifiers (e.g. ?patient_id=...),
    so they are cut before the line is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_strip_query(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _strip_query(record.msg)
        request_line = getattr(record, "request", None)
        if isinstance(request_line, str):
            record.request = _strip_query(request_line)
        return True


def _strip_query(text: str) -> str:
    return _QUERY.sub(r"\1?[redacted]", text)


_QUERY = re.compile(r"(\S*/\S*?)\?[^\s\"']*")
