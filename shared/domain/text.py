"""Text that can be stored and answered: every string that reaches MongoDB (BSON) or a JSON answer must encode as
UTF-8. A Python string may hold a lone UTF-16 surrogate (JSON's ``"\\ud800"`` decodes to one) that no UTF-8 can
hold; such text is refused where it enters (a JSON body, a contact), naming its field, never at the write."""

from __future__ import annotations


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot be stored (a lone UTF-16 surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"is not valid text: it holds a lone UTF-16 surrogate ({printable(exc.object[exc.start:exc.end])}), "
                "which UTF-8 cannot encode")
    return None


def printable(text: str) -> str:
    """``text`` with whatever UTF-8 cannot encode written as a ``\\uXXXX`` escape (field names in error answers)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
