"""One normalisation for everything that names the same thing in different spellings.

Person ids from every reader, and the records the privacy ledger fingerprints, go through
`normalize_text`: Unicode NFKC (full-width, ligatures, compatibility forms), case folding, and
every run of whitespace collapsed to one space, trimmed. Two spellings that a person would read
as the same then count as one: " P-17", "p-17" and "Ｐ-17" are one patient, and a record with
a trailing space is the record without it.
"""

from __future__ import annotations

import unicodedata

__all__ = ["normalize_text", "person_id"]


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def person_id(value: str | int | None) -> str | None:
    """A reader's person id, normalised; None for a missing or blank one."""
    if value is None:
        return None
    normalized = normalize_text(str(value))
    return normalized or None
