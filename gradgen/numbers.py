"""Numbers in expressions: literals folded at build time, and dims used as numbers at run time.

A number-only subexpression (``2 ** 0.5``, ``1 / 3``, ``2 * pi``) is computed here, exactly as Python
computes it on floats and ints, and becomes one literal in the generated code (``repr`` of the float,
an int where Python keeps an int).  A symbolic dim used as a number (``sqrt(K)``, ``N``, ``2 * D``) is
known only when the generated module binds its dims from the inputs, so it stays an expression over
dims (``RunNum``) that the planner renders with the module's dim variables.  Neither kind has a
gradient: both are constants of the graph.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from gradgen.dims import Dim, concrete

# The names that stand for numbers unless the spec defines a value or a dim with the same name.
CONSTANTS = {"pi": math.pi, "e": math.e}

# The largest magnitude that still converts to a float: an int beyond it is an overflow too.
_FLOAT_LIMIT = 2**1024


class FoldError(Exception):
    """A number-only subexpression that has no finite real value (the message says why)."""


@dataclass(frozen=True)
class RunNum:
    """A number known only at run time: a dim polynomial, or an operation on such numbers.

    ``op`` is ``"dim"`` (``dim`` holds the polynomial), ``"lit"`` (``value``), one of ``+ - * / **``,
    ``"neg"``, or a function of ``RUN_FUNCS`` applied to ``args[0]``.
    """

    op: str
    args: tuple[RunNum, ...] = ()
    dim: Dim | None = None
    value: int | float | None = None

    @property
    def functions(self) -> tuple[str, ...]:
        """The functions of RUN_FUNCS that this number applies (the generated module imports math)."""
        own = (self.op,) if self.op in RUN_FUNCS else ()
        return own + tuple(f for a in self.args for f in a.functions)


# Python's operators on numbers, as the spec writes them.
_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}


def _sigmoid(v: float) -> float:
    # the form that never overflows: exp of a non-positive number only
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    z = math.exp(v)
    return z / (1.0 + z)


# Elementwise ops applied to a number at build time: the same function on one value.
FOLD_FUNCS = {
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "tanh": math.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda v: max(v, 0),
    "square": lambda v: v * v,
    "abs": abs,
    "sin": math.sin,
    "cos": math.cos,
    "log1p": math.log1p,
    "expm1": math.expm1,
    "erf": math.erf,
}
# The same ops on a number known only at run time, as the generated code computes them: math's
# functions give Python floats, which keep a float32 array float32 (np.sqrt(K) would be a float64
# scalar and upcast it).
RUN_FUNCS = {
    "exp": "math.exp",
    "log": "math.log",
    "sqrt": "math.sqrt",
    "tanh": "math.tanh",
    "abs": "math.fabs",
    "sin": "math.sin",
    "cos": "math.cos",
    "log1p": "math.log1p",
    "expm1": "math.expm1",
    "erf": "math.erf",
}


def run_symbols(n: RunNum) -> tuple[str, ...]:
    """The dims a run-time number reads, in order of appearance."""
    if n.op == "dim":
        return n.dim.symbols
    return tuple(dict.fromkeys(s for a in n.args for s in run_symbols(a)))


def run_value(n: RunNum, sizes: dict[str, int]) -> int | float:
    """The number at the given dim sizes, as the generated code computes it (Python's errors too)."""
    if n.op == "dim":
        return concrete((n.dim,), sizes)[0]
    if n.op == "lit":
        return n.value
    if n.op == "neg":
        return -run_value(n.args[0], sizes)
    if n.op in RUN_FUNCS:
        return FOLD_FUNCS[n.op](run_value(n.args[0], sizes))
    return _BINARY[n.op](run_value(n.args[0], sizes), run_value(n.args[1], sizes))


def literal_text(value: int | float) -> str:
    """How a folded number is written in the generated code: an int as an int, a float by repr."""
    return repr(value)


def check_finite(value: int | float, what: str) -> int | float:
    """``value`` when it is a finite real number that converts to a float, else FoldError."""
    if isinstance(value, complex):
        raise FoldError(f"{what} is not a real number")
    if isinstance(value, int):
        if abs(value) >= _FLOAT_LIMIT:
            raise FoldError(f"{what} overflows: it is too large for a float")
        return value
    if not math.isfinite(value):
        raise FoldError(f"{what} overflows: it is not a finite float")
    return value


def fold_binary(op: str, a: int | float, b: int | float, what: str) -> int | float:
    """``a op b`` as Python computes it; division by zero, overflow and complex results refused."""
    # an int power is exact and unbounded in Python: refuse it before computing a huge number
    ints = isinstance(a, int) and isinstance(b, int)
    if op == "**" and ints and b > 0 and abs(a) > 1 and b * math.log2(abs(a)) >= 1024:
        raise FoldError(f"{what} overflows: it is too large for a float")
    if op == "/" and b == 0:
        raise FoldError(f"{what} divides by zero")
    try:
        value = _BINARY[op](a, b)
    except ZeroDivisionError:
        raise FoldError(f"{what} divides by zero") from None
    except OverflowError:
        raise FoldError(f"{what} overflows: it is not a finite float") from None
    return check_finite(value, what)


def fold_call(func: str, a: int | float, what: str) -> int | float:
    """An elementwise op applied to a number at build time."""
    try:
        value = FOLD_FUNCS[func](a)
    except OverflowError:
        raise FoldError(f"{what} overflows: it is not a finite float") from None
    except ValueError:
        raise FoldError(f"{what} is not defined: {func} of {a!r} has no real value") from None
    return check_finite(value, what)


# --------------------------------------------------------------------------------------------------
# numbers known at run time


def of_dim(d: Dim) -> RunNum:
    return RunNum("dim", dim=d)


def of_value(v: int | float) -> RunNum:
    return RunNum("lit", value=v)


def _as_dim(n: RunNum) -> Dim | None:
    """The dim polynomial a number is, when it is one (an int literal is a constant polynomial)."""
    if n.op == "dim":
        return n.dim
    if n.op == "lit" and isinstance(n.value, int):
        return Dim.const(n.value)
    return None


def run_binary(op: str, a: RunNum, b: RunNum, what: str) -> RunNum:
    """``a op b`` where one side is known only at run time; sums and products of dims stay dims."""
    da, db = _as_dim(a), _as_dim(b)
    if da is not None and db is not None and op in ("+", "-", "*"):
        if op == "-":
            db = Dim.const(-1) * db
        return of_dim(da * db if op == "*" else da + db)
    if op == "/" and ((db is not None and db.value == 0) or (b.op == "lit" and b.value == 0)):
        raise FoldError(f"{what} divides by zero")
    return RunNum(op, (a, b))


def run_neg(a: RunNum) -> RunNum:
    d = _as_dim(a)
    if d is not None:
        return of_dim(Dim.const(-1) * d)
    return RunNum("neg", (a,))


def run_call(func: str, a: RunNum) -> RunNum | None:
    """``func(a)`` at run time, or None when the op has no run-time form for numbers."""
    if func == "square":
        return run_binary("*", a, a, "")
    if func not in RUN_FUNCS:
        return None
    return RunNum(func, (a,))
