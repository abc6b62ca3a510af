"""Errors as values: every stage returns or raises a list of diagnostics, never a bare exception."""

from __future__ import annotations

from dataclasses import dataclass


def printable(text: str) -> str:
    """``text`` safe on one line of a terminal: every character that is not printable (a line break,
    a control character, a lone surrogate, which could not even be encoded) as its Python escape, so a
    diagnostic is always exactly one ``PATH:LINE:COL: error: MESSAGE`` line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True, order=True)
class Place:
    """Where something is in a spec file (line and col are 1-based)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{printable(self.file)}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "error" or "warning"
    place: Place
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.level}: {printable(self.message)}"


class SpecError(Exception):
    """Raised by a stage that found errors; carries every diagnostic it gathered."""

    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = list(diagnostics)


def error(place: Place, message: str) -> Diagnostic:
    return Diagnostic("error", place, message)


def warning(place: Place, message: str) -> Diagnostic:
    return Diagnostic("warning", place, message)
