"""The API's JSON renderer: DRF's output, written by orjson.

DRF's `JSONRenderer` runs `json.dumps` with a new encoder object per response. orjson writes the same JSON for what
the API returns (compact separators, UTF-8 rather than \\u escapes, str(uuid)) in C, in a fraction of the time;
floats are the same numbers, though below 1e-4 written as 1.5e-7 or 0.00001 where Python writes 1.5e-07 or 1e-05.
Everything orjson would write differently goes through DRF's own encoder: datetimes, dataclasses and any other type
orjson does not know reach DRF's `JSONEncoder.default` (`OPT_PASSTHROUGH_*`), and a response that asks for an
indent, or that orjson refuses (an integer beyond 64 bits), is rendered by DRF itself. U+2028 and U+2029 are
escaped as DRF escapes them. One difference is left: a float NaN or infinity is written as `null`, where DRF's
strict JSON fails the response with a 500; the API never returns one (inputs are finite; tests/apps/core/
test_renderers.py compares both renderers).
"""

from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_default = JSONEncoder().default


class JSONRenderer(renderers.JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict[str, Any] | None = None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type or "", renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)  # type: ignore[no-any-return]
        try:
            out = orjson.dumps(data, default=_default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)  # type: ignore[no-any-return]
        if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:  # as DRF: safe to embed in a <script>
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out
