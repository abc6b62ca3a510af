"""Reading a spec file: its text, or an error at ``PATH:LINE:COL`` saying why it cannot be read."""

from __future__ import annotations

import codecs
from pathlib import Path

from gradgen.diagnostics import Place, SpecError, error


def read_spec(path: Path) -> str:
    """The spec's text (UTF-8); raise SpecError when the file cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise _error(path, "this is a folder, not a spec file") from None
    except OSError as exc:
        raise _error(path, f"cannot read the spec: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([_not_utf8(path, data, exc.start)]) from None


def _not_utf8(path: Path, data: bytes, start: int):
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return error(Place(str(path), 1, 1), "the spec is UTF-16; save it as UTF-8")
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    col = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
    return error(
        Place(str(path), line, col),
        f"the spec is not valid UTF-8 (byte 0x{data[start]:02x} here); save it as UTF-8",
    )


def _error(path: Path, message: str) -> SpecError:
    return SpecError([error(Place(str(path), 1, 1), message)])
