"""A small expression tree for emitted code, rendered to Python text with minimal parentheses.

The planner builds these instead of strings so that a later pass can see which statements are
elementwise (and may write into a dead buffer) and which only alias or view another array.  Everything
still reaches the templates as finished strings.
"""

from __future__ import annotations

from dataclasses import dataclass

# Python's binding strengths, weakest first (the subset that emitted code uses).
PREC = {
    "cmp": 6,
    "|": 7,
    "&": 9,
    "+": 11,
    "-": 11,
    "*": 12,
    "/": 12,
    "@": 12,
    "neg": 13,
    "**": 14,
    "atom": 16,
}
CMP_OPS = ("<", "<=", ">", ">=", "==", "!=")
UFUNC_OF = {"+": "np.add", "-": "np.subtract", "*": "np.multiply", "/": "np.divide"}
AUG_OPS = ("+", "-", "*", "/")
# calls written as statements of their own that write into (a view of) their first argument
WRITES_FIRST = ("np.add.at", "np.copyto")


class E:
    prec = PREC["atom"]

    def render(self) -> str:
        raise NotImplementedError

    def vars(self) -> list[str]:
        """Variables read, in order of appearance (with repeats)."""
        return []

    def rename(self, m: dict[str, str]) -> E:
        return self

    # classification used by the buffer pass
    fresh = True  # evaluates to a new array owned by the caller
    view_of: str | None = None  # evaluates to a view of (or alias to) this variable

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class Var(E):
    name: str

    def render(self) -> str:
        return self.name.split("#")[0]

    def vars(self):
        return [self.name]

    def rename(self, m):
        return Var(m.get(self.name, self.name))

    fresh = False

    @property
    def view_of(self):
        return self.name


@dataclass(frozen=True)
class Lit(E):
    """A Python number or any other literal text (a tuple, a string) that reads no variable."""

    text: str

    @property
    def prec(self):
        return PREC["neg"] if self.text.startswith("-") else PREC["atom"]

    def render(self):
        return self.text

    fresh = False


def num(value: float | int) -> Lit:
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return Lit(text)


@dataclass(frozen=True)
class Bin(E):
    op: str
    a: E
    b: E

    @property
    def prec(self):
        return PREC["cmp"] if self.op in CMP_OPS else PREC[self.op]

    def render(self):
        p = self.prec
        if self.op == "**":
            left = _wrap(self.a, self.a.prec <= p)
            right = _wrap(self.b, self.b.prec < p)
        else:
            left = _wrap(self.a, self.a.prec < p)
            right = _wrap(self.b, self.b.prec <= p)
        return f"{left} {self.op} {right}"

    def vars(self):
        return self.a.vars() + self.b.vars()

    def rename(self, m):
        return Bin(self.op, self.a.rename(m), self.b.rename(m))


@dataclass(frozen=True)
class Neg(E):
    a: E
    prec = PREC["neg"]

    def render(self):
        return "-" + _wrap(self.a, self.a.prec < self.prec)

    def vars(self):
        return self.a.vars()

    def rename(self, m):
        return Neg(self.a.rename(m))


@dataclass(frozen=True)
class Invert(E):
    """``~a``: the elementwise logical not of a bool mask (it binds like unary minus)."""

    a: E
    prec = PREC["neg"]

    def render(self):
        return "~" + _wrap(self.a, self.a.prec < self.prec)

    def vars(self):
        return self.a.vars()

    def rename(self, m):
        return Invert(self.a.rename(m))


VIEW_FUNCS = (
    "np.broadcast_to",
    "np.expand_dims",
    "np.transpose",
    "np.reshape",
    "np.swapaxes",
    "np.moveaxis",
    "np.squeeze",
    "np.ravel",
)
VIEW_METHODS = ("reshape", "transpose", "swapaxes", "view")
UFUNCS = (
    "np.exp",
    "np.expm1",
    "np.log",
    "np.log1p",
    "np.sqrt",
    "np.tanh",
    "np.sin",
    "np.cos",
    "np.abs",
    "np.sign",
    "np.square",
    "np.negative",
    "np.maximum",
    "np.minimum",
    "np.multiply",
    "np.add",
    "np.subtract",
    "np.divide",
    "np.reciprocal",
    "np.power",
)
# Calls known to return a new array that the caller owns; any other call (np.flip, np.diagonal, ...) may
# return a view of its first operand, so the buffer pass never writes into its result.
FRESH_FUNCS = UFUNCS + (
    "np.full",
    "np.zeros",
    "np.zeros_like",
    "np.ones",
    "np.eye",
    "np.arange",
    "np.vdot",
    "np.outer",
    "np.concatenate",
    "np.einsum",
    "np.take",
    "np.where",
    "np.tensordot",
)


@dataclass(frozen=True)
class Call(E):
    func: str
    args: tuple[E, ...]
    kwargs: tuple[tuple[str, E], ...] = ()

    def render(self):
        parts = [a.render() for a in self.args] + [f"{k}={v.render()}" for k, v in self.kwargs]
        return f"{self.func}({', '.join(parts)})"

    def vars(self):
        out = []
        for a in self.args:
            out += a.vars()
        for _, v in self.kwargs:
            out += v.vars()
        return out

    def rename(self, m):
        return Call(
            self.func, tuple(a.rename(m) for a in self.args), tuple((k, v.rename(m)) for k, v in self.kwargs)
        )

    @property
    def fresh(self):
        return self.func in FRESH_FUNCS and not self._einsum_view

    @property
    def view_of(self):
        if self._einsum_view:
            return self.args[1].view_of
        if not self.fresh and self.args:  # a known view, or a call not known to copy
            return self.args[0].view_of
        return None

    @property
    def _einsum_view(self) -> bool:
        """np.einsum of one operand may return a view of it (a transpose, a diagonal); one that sums
        over an index (``'abc->ac'``) always makes a new array."""
        if self.func != "np.einsum" or len(self.args) != 2:
            return False
        spec = self.args[0].text.strip("'\"") if isinstance(self.args[0], Lit) else ""
        if "->" not in spec:
            return True
        inp, out = spec.split("->")
        return not (set(inp) - set(out) - {".", ","})

    @property
    def is_ufunc(self):
        return self.func in UFUNCS and not any(k == "out" for k, _ in self.kwargs)


@dataclass(frozen=True)
class Method(E):
    obj: E
    name: str
    args: tuple[E, ...] = ()
    kwargs: tuple[tuple[str, E], ...] = ()

    def render(self):
        parts = [a.render() for a in self.args] + [f"{k}={v.render()}" for k, v in self.kwargs]
        return f"{_wrap(self.obj, self.obj.prec < PREC['atom'])}.{self.name}({', '.join(parts)})"

    def vars(self):
        out = self.obj.vars()
        for a in self.args:
            out += a.vars()
        for _, v in self.kwargs:
            out += v.vars()
        return out

    def rename(self, m):
        return Method(
            self.obj.rename(m),
            self.name,
            tuple(a.rename(m) for a in self.args),
            tuple((k, v.rename(m)) for k, v in self.kwargs),
        )

    @property
    def fresh(self):
        # a view of a temporary that nothing else holds, like (x @ W).reshape(...), owns its buffer
        return self.name not in VIEW_METHODS or (self.obj.fresh and self.obj.view_of is None)

    @property
    def view_of(self):
        return self.obj.view_of if self.name in VIEW_METHODS else None


@dataclass(frozen=True)
class Attr(E):
    obj: E
    name: str  # "T" or "dtype" or "shape"

    def render(self):
        return f"{_wrap(self.obj, self.obj.prec < PREC['atom'])}.{self.name}"

    def vars(self):
        return self.obj.vars()

    def rename(self, m):
        return Attr(self.obj.rename(m), self.name)

    fresh = False

    @property
    def view_of(self):
        return self.obj.view_of if self.name == "T" else None


@dataclass(frozen=True)
class Index(E):
    obj: E
    index: tuple[E, ...]
    fancy: bool  # integer-array indexing copies; basic indexing is a view

    def render(self):
        inner = ", ".join(i.render() for i in self.index)
        return f"{_wrap(self.obj, self.obj.prec < PREC['atom'])}[{inner}]"

    def vars(self):
        out = self.obj.vars()
        for i in self.index:
            out += i.vars()
        return out

    def rename(self, m):
        return Index(self.obj.rename(m), tuple(i.rename(m) for i in self.index), self.fancy)

    @property
    def fresh(self):
        return self.fancy

    @property
    def view_of(self):
        return None if self.fancy else self.obj.view_of


@dataclass(frozen=True)
class Tuple(E):
    items: tuple[E, ...]

    def render(self):
        if len(self.items) == 1:
            return f"({self.items[0].render()},)"
        return "(" + ", ".join(i.render() for i in self.items) + ")"

    def vars(self):
        out = []
        for i in self.items:
            out += i.vars()
        return out

    def rename(self, m):
        return Tuple(tuple(i.rename(m) for i in self.items))

    fresh = False


@dataclass(frozen=True)
class Slice(E):
    """``lo:hi`` inside an index; its bounds are expressions, so the dims they read are seen."""

    lo: E | None
    hi: E | None
    step: E | None = None

    def render(self):
        lo = self.lo.render() if self.lo is not None else ""
        hi = self.hi.render() if self.hi is not None else ""
        return f"{lo}:{hi}" if self.step is None else f"{lo}:{hi}:{self.step.render()}"

    def vars(self):
        return [v for part in (self.lo, self.hi, self.step) if part is not None for v in part.vars()]

    def rename(self, m):
        lo, hi, step = (None if p is None else p.rename(m) for p in (self.lo, self.hi, self.step))
        return Slice(lo, hi, step)

    fresh = False


def _wrap(e: E, cond: bool) -> str:
    return f"({e.render()})" if cond else e.render()


# Smart constructors: fold the identities that a cotangent of 1 or a literal operand produces, so the
# emitted code never multiplies by one or adds zero.


def is_one(e: E) -> bool:
    return isinstance(e, Lit) and e.text in ("1", "1.0")


def mul(a: E, b: E) -> E:
    if is_one(a):
        return b
    if is_one(b):
        return a
    if isinstance(a, Neg) and isinstance(b, Neg):
        return mul(a.a, b.a)
    if isinstance(a, Neg):
        return Neg(mul(a.a, b))
    if isinstance(b, Neg):
        return Neg(mul(a, b.a))
    return Bin("*", a, b)


def div(a: E, b: E) -> E:
    if is_one(b):
        return a
    return Bin("/", a, b)


def add(a: E, b: E) -> E:
    if isinstance(b, Neg):
        return Bin("-", a, b.a)
    return Bin("+", a, b)


def sub(a: E, b: E) -> E:
    if isinstance(b, Neg):
        return Bin("+", a, b.a)
    return Bin("-", a, b)


def neg(a: E) -> E:
    if isinstance(a, Neg):
        return a.a
    return Neg(a)


def call(func: str, *args: E, **kwargs: E) -> Call:
    return Call(func, tuple(args), tuple(kwargs.items()))


def method(obj: E, name: str, *args: E, **kwargs: E) -> Method:
    return Method(obj, name, tuple(args), tuple(kwargs.items()))


def axis_lit(axes: tuple[int, ...]) -> Lit:
    return Lit(str(axes[0])) if len(axes) == 1 else Lit("(" + ", ".join(map(str, axes)) + ")")
