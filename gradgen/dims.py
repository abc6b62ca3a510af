"""Symbolic dimensions: polynomials in the spec's dim names with integer coefficients.

A plain symbolic dim is ``N``; ``reshape`` may create products (``B*T``) and ``concatenate`` sums
(``N + M``).  The canonical form (sorted monomials) makes equality structural, so two dims are the same
exactly when the spec proves them equal; nothing is guessed.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from math import prod

Monomial = tuple[str, ...]  # sorted symbol names, with repetition for powers


@dataclass(frozen=True)
class Dim:
    terms: tuple[tuple[Monomial, int], ...]  # sorted, no zero coefficients

    @staticmethod
    def const(k: int) -> Dim:
        return Dim((((), k),) if k else ())

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim((((name,), 1),))

    @staticmethod
    def _make(acc: dict[Monomial, int]) -> Dim:
        return Dim(tuple(sorted((m, c) for m, c in acc.items() if c)))

    def __add__(self, other: Dim) -> Dim:
        acc = dict(self.terms)
        for m, c in other.terms:
            acc[m] = acc.get(m, 0) + c
        return Dim._make(acc)

    def __mul__(self, other: Dim) -> Dim:
        acc: dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2))
                acc[m] = acc.get(m, 0) + c1 * c2
        return Dim._make(acc)

    @property
    def is_const(self) -> bool:
        return all(not m for m, _ in self.terms)

    @property
    def value(self) -> int | None:
        """The integer value when the dim is a constant, else None."""
        return sum(c for _, c in self.terms) if self.is_const else None

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for m, _ in self.terms for s in m}))

    def is_one(self) -> bool:
        return self.value == 1

    def written(self) -> tuple[tuple[Monomial, int], ...]:
        """The terms in the order a person writes them: those added, then those subtracted, each group
        with its symbols (in the canonical order) before its constant: ``T - 2``, ``D*H + 1``, ``1 - K``,
        ``N - K - 1``.  Only the display order; equality stays structural on ``terms``."""
        return tuple(sorted(self.terms, key=lambda t: (t[1] < 0, not t[0])))

    def render(self, names: dict[str, str] | None = None) -> str:
        """Python/display text; ``names`` maps dim symbols to variable names."""
        names = names or {}
        if not self.terms:
            return "0"
        text = ""
        for k, (m, c) in enumerate(self.written()):
            factors = [names.get(s, s) for s in m]
            if abs(c) != 1 or not factors:
                factors.insert(0, str(abs(c)))
            body = " * ".join(factors)
            if k == 0:
                text = "-" + body if c < 0 else body
            else:
                text += (" - " if c < 0 else " + ") + body
        return text

    def __str__(self) -> str:
        text = self.render()
        return text.replace(" * ", "*")

    def __repr__(self) -> str:
        return f"Dim({str(self)!r})"


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def numel(shape: tuple[Dim, ...]) -> Dim:
    out = Dim.const(1)
    for d in shape:
        out = out * d
    return out


def concrete(shape: tuple[Dim, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    """Evaluate a symbolic shape with concrete sizes (used by tests and property checks)."""
    return tuple(sum(c * prod(sizes[s] for s in m) for m, c in d.terms) for d in shape)


def parse_dim(text: str) -> Dim | None:
    """A dim as written in a shape: ``64``, ``N``, or a product of those, ``3*D``, ``H * Dh``.

    None when the text is not of that form (a factor that is neither a positive int nor a name that
    is an identifier, not a keyword and without a leading underscore)."""
    out = Dim.const(1)
    for factor in text.split("*"):
        f = factor.strip(" ")
        if f.isascii() and f.isdigit() and int(f) > 0:
            out = out * Dim.const(int(f))
        elif f.isidentifier() and f.isascii() and not keyword.iskeyword(f) and not f.startswith("_"):
            out = out * Dim.sym(f)
        else:
            return None
    return out


def single_symbol(d: Dim) -> str | None:
    """The name when a dim is one plain symbol (``N``, not ``2*N`` or ``H*Dh``), else None."""
    if len(d.terms) == 1:
        ((m, c),) = d.terms
        if c == 1 and len(m) == 1:
            return m[0]
    return None


def substitute(d: Dim, env: dict[str, Dim]) -> Dim:
    """``d`` with every symbol replaced by its dim in ``env`` (a block's local dims at one call)."""
    out = Dim.const(0)
    for m, c in d.terms:
        term = Dim.const(c)
        for sym in m:
            term = term * env[sym]
        out = out + term
    return out


def at_least(d: Dim, bound: int) -> bool:
    """Whether d >= bound for every value >= 1 of its symbols (every dim is a positive size).

    Each symbol s is written 1 + t with t >= 0; when every coefficient of the expanded polynomial in the
    t's is >= 0 (and its constant term >= bound), the claim holds for all sizes.  It is sufficient, not
    necessary: False means "not proven"."""
    acc: dict[Monomial, int] = {}
    for m, c in d.terms:
        # prod over the symbols of m of (1 + t_s): every sub-multiset of m, expanded term by term
        expanded: dict[Monomial, int] = {(): 1}
        for s in m:
            nxt: dict[Monomial, int] = {}
            for mono, k in expanded.items():
                nxt[mono] = nxt.get(mono, 0) + k
                grown = tuple(sorted(mono + (s,)))
                nxt[grown] = nxt.get(grown, 0) + k
            expanded = nxt
        for mono, k in expanded.items():
            acc[mono] = acc.get(mono, 0) + c * k
    const = acc.pop((), 0)
    return const >= bound and all(k >= 0 for k in acc.values())
