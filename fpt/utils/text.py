"""Text helpers for the one-line error messages every layer writes."""

__all__ = ["first_line"]


def first_line(e):
    """The first line of an exception's message (its type name when empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
