"""OpenAPI post-processing: every operation documents the one error shape the API answers with."""

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code"},
                "message": {"type": "string", "description": "What went wrong, for a person"},
                "fields": {"type": "object", "description": "Field (a name, a batch index, or a JSON path such as "
                                                          "`features.glucose.value` or `0.patient_id`) -> messages",
                           "additionalProperties": True},
            },
            "additionalProperties": True,
        },
    },
}
ERRORS = {
    "400": "Invalid input: the fields say what was wrong and what is accepted",
    "401": "Missing, invalid or expired credentials",
    "403": "The token lacks the required scope",
    "404": "Not found",
    "412": "A precondition failed (e.g. the caller's FHIR server could not be read)",
    "422": "Idempotency-Key reused with a different body",
    "429": "Too many requests for this client; see Retry-After",
    "500": "An unexpected error; `error.request_id` names it in the server's logs (nothing was stored)",
    "503": "No live model, or the database is unavailable; retry later",
}
# Only where a request body is read.
BODY_ERRORS = {
    "413": "The body is larger than CLINPREDICT_MAX_BODY_BYTES (`error.limit_bytes`)",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            # Errors come in JSON, or in FHIR JSON where the operation answers FHIR (its renderer is chosen first).
            media = {"application/json"} | {
                media_type for code, response in responses.items() if str(code).startswith("2")
                for media_type in response.get("content", {}) if media_type == "application/fhir+json"}
            errors = {**ERRORS, **(BODY_ERRORS if method in {"post", "put", "patch"} else {})}
            for status, description in sorted(errors.items()):
                responses.setdefault(status, {"description": description,
                                              "content": {m: {"schema": ref} for m in sorted(media)}})
    return result
