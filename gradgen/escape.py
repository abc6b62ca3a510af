"""The one gate between spec text and generated code.

Every piece of text that comes from a spec or its file name and is printed into a generated file (the
description, the spec's path, the echo of each graph entry, shape texts in docstrings) goes through
``one_line``.  Its result is a single line that reads the same in a ``#`` comment and inside a
``\"\"\"`` docstring and can end neither:

- every character that is not printable (control characters, NUL, CR and LF, the Unicode line and
  paragraph separators, format characters such as the bidi overrides, lone surrogates, unassigned code
  points, any space other than U+0020) is written as an escape (``\\\\n``, ``\\\\x00``, ``\\\\u2028``);
- a backslash is doubled and a double quote is preceded by a backslash, so a docstring holds exactly
  the text shown and no quote can close it;
- text longer than ``MAX_CHARS`` (counted after escaping) is cut at a character boundary, never inside
  an escape, and ends with ``...``.

The escapes are printable ASCII, so the docstring's value (what ``help()`` shows) is printable too:
no terminal control sequence or line break from a spec reaches a reader through it.
"""

from __future__ import annotations

MAX_CHARS = 200  # a cut line is this long, "..." included
ELLIPSIS = "..."

_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\\\n", "\r": "\\\\r", "\t": "\\\\t"}


def _char(c: str) -> str:
    """One character as it appears in the line."""
    named = _NAMED.get(c)
    if named is not None:
        return named
    if c.isprintable():
        return c
    code = ord(c)
    if code < 0x100:
        return f"\\\\x{code:02x}"
    if code < 0x10000:
        return f"\\\\u{code:04x}"
    return f"\\\\U{code:08x}"


def one_line(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` as one printable line, safe in a comment and in a docstring; at most ``limit`` chars."""
    pieces = []
    size = 0
    for c in text:
        piece = _char(c)
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            break
    if size <= limit:
        return "".join(pieces)
    kept, size = [], len(ELLIPSIS)
    for piece in pieces:
        if size + len(piece) > limit:
            break
        kept.append(piece)
        size += len(piece)
    return "".join(kept) + ELLIPSIS
