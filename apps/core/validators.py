"""Identifiers (patient ids, use cases, idempotency keys, source ids) are compared, stored, logged and shown to
people: characters that are invisible or that reorder the text around them (Trojan Source, CVE-2021-42574) make two
different ids look alike. Refused, naming the character and where it is."""

import unicodedata

from django.core.exceptions import ValidationError

# Cc: C0/C1 controls (tab, newline, NUL, ESC ...); Cf: format characters, among them the bidi embeddings, overrides and
# isolates U+202A-U+202E, U+2066-U+2069, the marks U+200E/U+200F/U+061C, zero-width U+200B-U+200D and U+FEFF; Zl/Zp:
# the line and paragraph separators U+2028/U+2029; Cs: lone surrogates.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
ACCEPTED = "visible characters and spaces only (no control, bidi or zero-width characters)"


def invisible_character(value: str) -> tuple[int, str] | None:
    """(position, character) of the first refused character in `value`, or None."""
    for position, char in enumerate(value):
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return position, char
    return None


def refusal(value: str) -> str | None:
    """Why `value` cannot be an identifier, for an error message, or None when it can."""
    found = invisible_character(value)
    if found is None:
        return None
    position, char = found
    name = unicodedata.name(char, "a control character")
    return f"Contains U+{ord(char):04X} ({name}) at position {position + 1}; accepted: {ACCEPTED}."


def validate_identifier(value: str) -> None:
    """A Django/DRF field validator."""
    message = refusal(value)
    if message is not None:
        raise ValidationError(message, code="invisible_character")
