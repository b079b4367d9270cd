"""The errors an index folder raises, shared by its writer/reader (:mod:`deploy.index_store`)
and its per-item file (:mod:`deploy.items_file`); both modules re-export them.

Only the standard library is imported here.
"""

from __future__ import annotations

from typing import Any


class IndexFormatError(ValueError):
    """An index folder's files are truncated, corrupted, inconsistent or of another format."""


class IndexMismatchError(ValueError):
    """An index was made by another encoder (fingerprint) or for another code length.

    Attributes:
        fingerprint: the codes identity the index records (``"<fingerprint>+float"``).
        bits: the code length it records.
    """

    def __init__(self, message: str, fingerprint: str = "", bits: int | None = None):
        super().__init__(message)
        self.fingerprint = fingerprint
        self.bits = bits


def short(value: Any, limit: int = 60) -> str:
    """repr of a value read from a file, cut short: messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
