"""Hypothesis strategies for the property-based tests: random gradgen specs built from random
compositions of ops, with random broadcasting, together with an independent NumPy reference evaluator.

A drawn ``Case`` holds the spec text, the concrete size of every symbolic dim (distinct sizes, so a
swapped axis cannot pass), a maker for the inputs, and a reference evaluator that recomputes every graph
value with plain NumPy and measures how close the drawn inputs come to the places where the ops are not
smooth (relu/abs at 0, maximum/minimum at ties) or not defined (log/sqrt/pow-0.5/division near 0).  The
test resamples the input values until those margins are comfortable, so central differences are valid.

Nothing here imports gradgen: the shape bookkeeping and the reference semantics are written from
SPEC.md, so they are an oracle for the generated code rather than a copy of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

DIM_NAMES = ("N", "M", "K", "P")

# Operator precedence levels, for printing expressions with only the parentheses Python needs.
ADD, MUL, UNARY, POW, ATOM = 60, 70, 80, 90, 100
CMP, BOR, BAND = 40, 45, 50  # comparisons bind more loosely than |, which binds more loosely than &

ISSUE2_OPS = (
    "add",
    "sub",
    "mul",
    "div",
    "matmul",
    "pow",
    "neg",
    "T",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "sigmoid",
    "relu",
    "square",
    "abs",
    "sum",
    "mean",
    "logsumexp",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
)
ISSUE3_OPS = (
    "batched_matmul",
    "transpose",
    "reshape",
    "einsum",
    "maximum",
    "minimum",
    "take",
    "concatenate",
)
# Issue 7: the stable elementwise ops (the rewrites also meet log(sigmoid(.)), log(1 - sigmoid(.)),
# log(1 + exp(.)), log(softmax(.)) and log(sum(exp(.))) built by ``positive`` and the log op).
ISSUE7_OPS = ("log_sigmoid", "softplus")
# Issue 9, the reductions: max and min over axes (their ties are kinks: the margin is the gap between a
# slice's two largest (smallest) entries).
ISSUE9_REDUCE_OPS = ("max", "min", "var", "std")
# Issue 9, masks: where(cond, a, b) with cond a comparison (of tensors or a tensor and a number), a bool
# input, or masks combined with & | ~ (ops_masks).
ISSUE9_MASK_OPS = ("where",)
# Issue 9's elementwise ops ("power" is a ** b with a tensor exponent; "gelu" draws either form)
ISSUE9_ELEM_OPS = ("sin", "cos", "log1p", "expm1", "erf", "gelu", "clip", "power")
# Issue 9, static indexing: x[...] with ints, slices, None and ..., split with a tuple target, stack.
ISSUE9_INDEX_OPS = ("index", "split", "stack")
# Issue 9: padding, convolutions and pooling ("same"-size windows, so symbolic sizes stay writable).
ISSUE9_CONV_OPS = ("pad", "conv1d", "conv2d", "max_pool2d", "avg_pool2d")
ALL_OPS = (
    ISSUE2_OPS
    + ISSUE3_OPS
    + ISSUE7_OPS
    + ISSUE9_REDUCE_OPS
    + ("take_along_axis", "argmax", "argmin")
    + ISSUE9_MASK_OPS
    + ISSUE9_ELEM_OPS
    + ISSUE9_INDEX_OPS
    + ISSUE9_CONV_OPS
)


# --------------------------------------------------------------------------------------------------
# symbolic dims: polynomials in the dim names (reshape makes products, concatenate makes sums)


@dataclass(frozen=True)
class Dim:
    terms: tuple  # sorted ((monomial: tuple of names), coefficient)

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim((((name,), 1),))

    @staticmethod
    def _make(acc: dict) -> Dim:
        return Dim(tuple(sorted((m, c) for m, c in acc.items() if c)))

    def __add__(self, other: Dim) -> Dim:
        acc = dict(self.terms)
        for m, c in other.terms:
            acc[m] = acc.get(m, 0) + c
        return Dim._make(acc)

    def __mul__(self, other: Dim) -> Dim:
        acc: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2))
                acc[m] = acc.get(m, 0) + c1 * c2
        return Dim._make(acc)

    def is_one(self) -> bool:
        return self.terms == (((), 1),)

    def monomial(self) -> bool:
        return len(self.terms) == 1

    def names(self) -> tuple[str, ...] | None:
        """The factors of a coefficient-1 monomial (``N*M`` -> ("M", "N")), else None."""
        if len(self.terms) == 1 and self.terms[0][1] == 1:
            return self.terms[0][0]
        return None

    def writable(self) -> str | None:
        """How the dim is written in a spec shape (a name or 1), or None if it cannot be."""
        if self.is_one():
            return "1"
        if len(self.terms) == 1 and not self.terms[0][0] and self.terms[0][1] > 0:
            return str(self.terms[0][1])  # a literal size (a kernel's)
        n = self.names()
        if n is not None and len(n) == 1:
            return n[0]
        return None

    def size(self, sizes: dict[str, int]) -> int:
        total = 0
        for m, c in self.terms:
            v = c
            for s in m:
                v *= sizes[s]
            total += v
        return total


ONE = Dim((((), 1),))


def _index_form(form: str, d: Dim):
    """The NumPy index of one form of ``op_index`` on an axis of dim d, and the axis's new length
    (None: the axis is dropped)."""
    minus = Dim._make({(): -1})
    table = {
        ":": (slice(None), d),
        "::1": (slice(None, None, 1), d),
        "0": (0, None),
        "-1": (-1, None),
        "1:": (slice(1, None), d + minus),
        ":-1": (slice(None, -1), d + minus),
        "-2:": (slice(-2, None), Dim._make({(): 2})),
        "1:-1": (slice(1, -1), d + minus + minus),
    }
    if form in table:
        return table[form]
    return slice(None), d  # ":NAME", the whole axis by its own dim


def _neg(d: Dim) -> Dim:
    return Dim._make({m: -c for m, c in d.terms})


def _sum_text(d: Dim) -> str:
    return " + ".join("*".join(m) if c == 1 else f"{c}*{'*'.join(m)}" for m, c in d.terms)


def _take_range(v, lo: int, hi: int, ax: int):
    return v[(slice(None),) * ax + (slice(lo, hi),)]


def entry_nodes(entries) -> dict:
    """Each graph name's node: a split's names (``t3p0, t3p1``) each get their piece."""
    out = {}
    for name, node in entries:
        if node.kind == "split":
            out.update(zip(name.split(", "), node.args))
        else:
            out[name] = node
    return out


def numel(shape) -> Dim:
    out = ONE
    for d in shape:
        out = out * d
    return out


def broadcast(*shapes):
    rank = max(len(s) for s in shapes)
    out = []
    for k in range(rank, 0, -1):
        dim = None
        for s in shapes:
            if len(s) < k:
                continue
            d = s[-k]
            if dim is None or dim.is_one():
                dim = d
            elif not (d.is_one() or d == dim):
                raise AssertionError(f"strategy bug: {shapes} do not broadcast")
        out.append(dim)
    return tuple(out)


def broadcasts(sa, sb, max_rank) -> bool:
    if max(len(sa), len(sb)) > max_rank:
        return False
    return all(x == y or x.is_one() or y.is_one() for x, y in zip(reversed(sa), reversed(sb)))


def matmul_shape(sa, sb):
    """numpy.matmul's result shape, on symbolic dims."""
    a = (ONE,) + tuple(sa) if len(sa) == 1 else tuple(sa)
    b = tuple(sb) + (ONE,) if len(sb) == 1 else tuple(sb)
    assert a[-1] == b[-2], (sa, sb)
    batch = broadcast(a[:-2], b[:-2]) if (len(a) > 2 or len(b) > 2) else ()
    out = batch + (a[-2], b[-1])
    if len(sa) == 1:
        out = out[:-2] + out[-1:]
    if len(sb) == 1:
        out = out[:-1]
    return out


def shape_text(shape) -> str:
    return "[" + ", ".join(d.writable() for d in shape) + "]"


# --------------------------------------------------------------------------------------------------
# the reference evaluator's context


class Ctx:
    """Values of named entries and the margins recorded while evaluating the reference."""

    def __init__(self, values: dict, sizes: dict[str, int]):
        self.values = dict(values)
        self.sizes = sizes
        self.kink = np.inf  # smallest nonzero |value| at relu/abs, |a - b| at maximum/minimum
        self.domain = np.inf  # smallest argument of log/sqrt/fractional power/division
        self.big = 0.0  # largest |value| anywhere

    def note_kink(self, v):
        v = np.abs(np.asarray(v, dtype=np.float64))
        v = v[v != 0]  # exact zeros are structural (relu(relu(x)), ties of equal expressions)
        if v.size:
            self.kink = min(self.kink, float(v.min()))

    def note_domain(self, v):
        v = np.asarray(v, dtype=np.float64)
        if v.size:
            self.domain = min(self.domain, float(v.min()))

    def note_value(self, v):
        v = np.asarray(v, dtype=np.float64)
        if v.size:
            if not np.all(np.isfinite(v)):
                self.big = np.inf
            else:
                self.big = max(self.big, float(np.abs(v).max()))


def _runner_up_gap(v, axes):
    """The gap between the largest and the second-largest entry of each reduced slice, and the same
    at the smallest end: how far a max or min is from a tie (none for a slice of one entry)."""
    v = np.asarray(v, dtype=np.float64)
    rest = [k for k in range(v.ndim) if k not in axes]
    rows = np.transpose(v, rest + list(axes)).reshape(int(np.prod([v.shape[k] for k in rest])), -1)
    if rows.shape[1] < 2:
        return np.zeros(0)
    ordered = np.sort(rows, axis=1)
    return np.concatenate([ordered[:, -1] - ordered[:, -2], ordered[:, 1] - ordered[:, 0]])


def _lse(a, axis, keepdims):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _log_softmax(a, axis):
    return a - _lse(a, axis, True)


def _erf(v):
    """The reference erf: the standard library's, element by element (an oracle, not gradgen's)."""
    return np.vectorize(math.erf, otypes=[np.float64])(v)


# --------------------------------------------------------------------------------------------------
# graph nodes


@dataclass
class Node:
    text: str
    prec: int
    shape: tuple
    pos: bool  # strictly positive by construction
    ev: Callable  # Ctx -> np.ndarray
    name: str | None = None
    kind: str = ""  # graph structure: input | name | add | neg | lit | pow1 | pass | mask | T; "" else
    args: tuple = ()  # the tensor operands (kind and args: to single out a construction if need be)
    pyfloat: bool = False  # a Python float when rank-0 inputs are passed as Python numbers

    @property
    def rank(self) -> int:
        return len(self.shape)


def paren(node: Node, need: int) -> str:
    return node.text if node.prec >= need else f"({node.text})"


@dataclass
class InputDecl:
    name: str
    shape: tuple
    kind: str  # normal | pos | prob | int | bool
    high: Dim | None = None  # int inputs: values in [0, high)

    @property
    def is_float(self) -> bool:
        return self.kind not in ("int", "bool")

    def make(self, rng: np.random.Generator, sizes: dict[str, int]):
        shape = tuple(d.size(sizes) for d in self.shape)
        if self.kind == "int":
            return rng.integers(0, self.high.size(sizes), size=shape).astype(np.int64)
        if self.kind == "bool":
            return rng.random(shape) < 0.5
        if self.kind == "pos":
            return rng.uniform(0.5, 2.0, size=shape)
        if self.kind == "prob":
            z = rng.standard_normal(shape)
            return np.exp(_log_softmax(z, -1))
        return rng.standard_normal(shape)


@dataclass
class Case:
    text: str
    sizes: dict[str, int]
    inputs: list[InputDecl]
    entries: list[tuple[str, Node]]
    output: str
    wrt: tuple[str, ...]  # the effective wrt (default: float inputs in input order)
    ops: tuple[str, ...] = ()  # ops used, for statistics
    scalar_method: bool = False  # see Builder.scalar_method

    def __repr__(self) -> str:
        return f"Case(sizes={self.sizes}, ops={list(self.ops)}):\n{self.text}"

    @property
    def scalar_output(self) -> bool:
        return entry_nodes(self.entries)[self.output].shape == ()

    def make_inputs(self, rng):
        return {i.name: i.make(rng, self.sizes) for i in self.inputs}

    def reference(self, inputs) -> Ctx:
        ctx = Ctx(inputs, self.sizes)
        for name, node in self.entries:
            for one, part in zip(name.split(", "), node.args if node.kind == "split" else (node,)):
                v = np.asarray(part.ev(ctx), dtype=np.float64)
                ctx.note_value(v)
                ctx.values[one] = v
        return ctx


# --------------------------------------------------------------------------------------------------
# the builder


class Unsupported(Exception):
    """This op cannot be built from the current pool; the builder tries another."""


class Builder:
    def __init__(self, draw, sizes: dict[str, int], ops, max_rank: int, input_rank: int):
        self.draw = draw
        self.sizes = sizes
        self.dims = tuple(Dim.sym(n) for n in sizes)
        self.ops = ops
        self.max_rank = max_rank
        self.input_rank = input_rank
        self.inputs: list[InputDecl] = []
        self.pool: list[Node] = []  # named float tensors: inputs and entries
        self.entries: list[tuple[str, Node]] = []
        self.pending: Node | None = None  # an unnamed expression the next op may nest
        self.used: list[str] = []
        self.failed: list[str] = []
        self.scalar_method = False  # a Python-float value is the receiver of a method (check_case)

    # ---- helpers -------------------------------------------------------------------------------

    def flip(self, p: float = 0.5) -> bool:
        return self.draw(st.integers(0, 999)) < p * 1000  # (floats(0, 1) lean heavily to 0)

    def choice(self, seq):
        return self.draw(st.sampled_from(list(seq)))

    def any_dim(self, allow_one=True) -> Dim:
        return self.choice(self.dims + ((ONE,) if allow_one else ()))

    def new_input(self, shape, kind="normal", high=None) -> Node:
        assert all(d.writable() for d in shape), shape
        if kind == "int":
            name = f"i{sum(1 for i in self.inputs if i.kind == 'int')}"
        elif kind == "bool":
            name = f"m{sum(1 for i in self.inputs if i.kind == 'bool')}"
        else:
            name = f"x{sum(1 for i in self.inputs if i.is_float)}"
        self.inputs.append(InputDecl(name, tuple(shape), kind, high))
        node = Node(
            name,
            ATOM,
            tuple(shape),
            kind in ("pos", "prob"),
            lambda c, n=name: c.values[n],
            name,
            kind="input",
            pyfloat=not shape,
        )
        if kind not in ("int", "bool"):
            self.pool.append(node)
        return node

    def bind(self, node: Node) -> Node:
        name = f"t{len(self.entries)}"
        self.entries.append((name, node))
        named = Node(
            name,
            ATOM,
            node.shape,
            node.pos,
            lambda c, n=name: c.values[n],
            name,
            kind="name",
            args=(node,),
            pyfloat=node.pyfloat,
        )
        self.pool.append(named)
        return named

    def bind_split(self, node: Node) -> None:
        names = [f"t{len(self.entries)}p{j}" for j in range(len(node.args))]
        self.entries.append((", ".join(names), node))
        for name, piece in zip(names, node.args):
            self.pool.append(
                Node(name, ATOM, piece.shape, piece.pos, lambda c, n=name: c.values[n], name, kind="name")
            )

    def flush(self):
        if self.pending is not None:
            self.bind(self.pending)
            self.pending = None

    def pick(self, pred=lambda n: True, *, allow_new_rank=None) -> Node:
        """The first operand of an op: the pending nested expression if it fits, else a pool node
        (recent ones and much-used ones alike), else a fresh input of a fitting rank."""
        if self.pending is not None and pred(self.pending):
            node, self.pending = self.pending, None
            return node
        cands = [n for n in self.pool if pred(n)]
        if cands and (allow_new_rank is None or not self.flip(0.15)):
            return cands[self.draw(st.integers(0, len(cands) - 1))]
        if allow_new_rank is None:
            raise Unsupported
        lo, hi = allow_new_rank
        rank = self.draw(st.integers(lo, min(hi, self.input_rank)))
        shape = tuple(self.any_dim(allow_one=self.flip(0.2)) for _ in range(rank))
        node = self.new_input(shape, "pos" if self.flip(0.25) else "normal")
        if not pred(node):
            raise Unsupported
        return node

    def operand(self, shape, pos=False) -> Node:
        """A tensor of exactly this shape: an existing one (fan-out) or a fresh input."""
        shape = tuple(shape)
        cands = [n for n in self.pool if n.shape == shape and (n.pos or not pos)]
        writable = all(d.writable() for d in shape) and len(shape) <= self.input_rank
        if cands and (not writable or self.flip(0.6)):
            return cands[self.draw(st.integers(0, len(cands) - 1))]
        if pos and not writable:
            weak = [n for n in self.pool if n.shape == shape]
            if weak:
                return self.positive(self.choice(weak))
        if not writable:
            raise Unsupported
        if pos:
            return self.new_input(shape, "pos")
        return self.new_input(shape, "pos" if self.flip(0.2) else "normal")

    def positive(self, node: Node) -> Node:
        """A strictly positive expression built on ``node`` (for log, sqrt, ** 0.5, division)."""
        if node.pos:
            return node
        made = self._positive(node)
        inner = made.ev

        def noted(c):
            v = inner(c)
            c.note_value(v)
            return v

        made.ev = noted
        return made

    def _positive(self, node: Node) -> Node:
        how = self.draw(st.sampled_from(["square1", "exp", "sigmoid", "abs", "1-sigmoid", "1+exp"]))
        if how == "exp":
            return Node(f"exp({node.text})", ATOM, node.shape, True, lambda c: np.exp(node.ev(c)))
        if how == "sigmoid":
            return Node(
                f"sigmoid({node.text})", ATOM, node.shape, True, lambda c: 1 / (1 + np.exp(-node.ev(c)))
            )
        if how == "1-sigmoid":
            return Node(
                f"1 - sigmoid({node.text})", ADD, node.shape, True, lambda c: 1 / (1 + np.exp(node.ev(c)))
            )
        if how == "1+exp":
            return Node(f"1 + exp({node.text})", ADD, node.shape, True, lambda c: 1 + np.exp(node.ev(c)))
        if how == "abs":

            def ev(c):
                v = node.ev(c)
                c.note_kink(v)
                return np.abs(v) + 0.5

            return Node(f"abs({node.text}) + 0.5", ADD, node.shape, True, ev)
        return Node(f"square({node.text}) + 1", ADD, node.shape, True, lambda c: np.square(node.ev(c)) + 1)

    def partner_shape(self, shape):
        """A shape that broadcasts with ``shape`` (either may be the larger one)."""
        shape = tuple(shape)
        rank = self.draw(st.integers(0, min(self.max_rank, self.input_rank)))
        if self.flip(0.4):
            rank = min(len(shape), self.input_rank)
        out = []
        for k in range(rank, 0, -1):
            if k <= len(shape):
                d = shape[-k]
                if d.is_one():
                    out.append(self.any_dim() if self.flip(0.5) else ONE)
                else:
                    out.append(d if self.flip(0.75) else ONE)
            else:
                out.append(self.any_dim(allow_one=True))
        return tuple(out)

    def partner(self, node: Node, pos=False) -> Node:
        if self.flip(0.4):  # fan-out: any existing tensor that broadcasts with this one (or itself)
            fits = [
                n for n in self.pool if (n.pos or not pos) and broadcasts(n.shape, node.shape, self.max_rank)
            ]
            if fits:
                return fits[self.draw(st.integers(0, len(fits) - 1))]
        shape = self.partner_shape(node.shape)
        if not all(d.writable() for d in shape):
            cands = [n for n in self.pool if n.shape == shape]
            if not cands:
                shape = node.shape  # fan-out on a same-shaped tensor, or the node itself
        return self.operand(shape, pos)

    # ---- ops -----------------------------------------------------------------------------------

    def op_binary(self, kind):
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[kind]
        level = ADD if sym in "+-" else MUL
        fn = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[sym]
        a = self.pick(lambda n: n.rank <= self.max_rank, allow_new_rank=(0, 2))
        if self.flip(0.25):  # a literal on one side
            lit = self.choice(["2", "0.5", "1.5", "3.0"])
            litv = float(lit)
            lit_left = self.flip()
            if lit_left:
                if sym == "/":
                    a = self.positive(a)
                text = f"{lit} {sym} {paren(a, level + 1)}"

                def ev(c, a=a):
                    v = a.ev(c)
                    if sym == "/":
                        c.note_domain(v)
                    return fn(litv, v)

            else:
                text = f"{paren(a, level)} {sym} {lit}"
                ev = lambda c, a=a: fn(a.ev(c), litv)
            pos = a.pos and sym != "-"
            lit_kind = "add" if sym in "+-" else ("lit" if sym == "*" or not lit_left else "")
            return Node(text, level, a.shape, pos, ev, kind=lit_kind, args=(a,), pyfloat=a.pyfloat)
        b = self.partner(a, pos=(sym == "/"))
        if self.flip():  # either side may be the broadcast one
            if sym == "/":
                a = self.positive(a)
            a, b = b, a
        shape = broadcast(a.shape, b.shape)
        if len(shape) > self.max_rank:
            raise Unsupported

        def ev(c, a=a, b=b):
            va, vb = a.ev(c), b.ev(c)
            if sym == "/":
                c.note_domain(vb)
            return fn(va, vb)

        return Node(
            f"{paren(a, level)} {sym} {paren(b, level + 1)}",
            level,
            shape,
            a.pos and b.pos and sym != "-",
            ev,
            kind="add" if sym in "+-" else "",
            args=(a, b),
            pyfloat=a.pyfloat and b.pyfloat,
        )

    def op_pow(self):
        a = self.pick(allow_new_rank=(0, 2))
        k = self.choice(["2", "3", "0.5", "1.5", "-1", "1", "0"])
        if k not in ("2", "3"):
            a = self.positive(a)
        kv = float(k)

        def ev(c):
            v = a.ev(c)
            if k not in ("2", "3"):
                c.note_domain(v)
            return v**kv

        return Node(
            f"{paren(a, ATOM)} ** {k}",
            POW,
            a.shape,
            a.pos,
            ev,
            kind="pow1" if k == "1" else "",
            args=(a,),
            pyfloat=a.pyfloat,
        )

    def op_neg(self):
        a = self.pick(allow_new_rank=(0, 2))
        return Node(
            f"-{paren(a, UNARY)}",
            UNARY,
            a.shape,
            False,
            lambda c: -a.ev(c),
            kind="neg",
            args=(a,),
            pyfloat=a.pyfloat,
        )

    def op_T(self):
        low_rank_ok = self.flip(0.1)  # .T of a vector or scalar is the identity
        a = self.pick(lambda n: n.rank >= 2 or low_rank_ok, allow_new_rank=(2, 2))
        self.note_method(a)
        return Node(
            f"{paren(a, ATOM)}.T",
            ATOM,
            a.shape[::-1],
            a.pos,
            lambda c: np.asarray(a.ev(c)).T,
            kind="T",
            args=(a,),
        )

    def op_unary(self, fn):
        a = self.pick(allow_new_rank=(0, 2))
        if fn in ("log", "sqrt"):
            a = self.positive(a)

        def ev(c):
            v = a.ev(c)
            if fn in ("log", "sqrt"):
                c.note_domain(v)
            if fn in ("relu", "abs"):
                c.note_kink(v)
            return {
                "exp": np.exp,
                "log": np.log,
                "sqrt": np.sqrt,
                "tanh": np.tanh,
                "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
                "log_sigmoid": lambda x: -np.logaddexp(0, -x),
                "softplus": lambda x: np.logaddexp(0, x),
                "relu": lambda x: np.maximum(x, 0),
                "square": np.square,
                "abs": np.abs,
            }[fn](v)

        pos = fn in ("exp", "sigmoid", "softplus") or (fn == "sqrt")
        return Node(f"{fn}({a.text})", ATOM, a.shape, pos, ev, kind="mask" if fn == "relu" else "", args=(a,))

    def op_elem(self, fn):
        """sin, cos, log1p (on a positive operand), expm1, erf, and gelu in either form."""
        a = self.pick(allow_new_rank=(0, 2))
        if fn == "log1p":
            a = self.positive(a)
        text = f"{fn}({a.text})"
        if fn == "gelu" and self.flip():
            text = f'gelu({a.text}, approximate="tanh")'
        tanh_form = "tanh" in text

        def ev(c):
            v = np.asarray(a.ev(c), dtype=np.float64)
            if fn == "log1p":
                c.note_domain(v)
            if fn == "gelu" and tanh_form:
                return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
            if fn == "gelu":
                return v * 0.5 * (1 + _erf(v / np.sqrt(2)))
            return {"sin": np.sin, "cos": np.cos, "log1p": np.log1p, "expm1": np.expm1, "erf": _erf}[fn](v)

        return Node(text, ATOM, a.shape, False, ev, args=(a,))

    def op_clip(self):
        """clip(a, lo, hi) with tensor or number bounds; its kinks are where a meets a bound."""
        a = self.pick(lambda n: n.rank <= self.max_rank, allow_new_rank=(0, 3))
        bounds = []
        for lit in ("-0.5", "0.75"):
            if self.flip(0.4):
                bounds.append(
                    Node(lit, ATOM if lit[0] != "-" else UNARY, (), False, lambda c, v=float(lit): v)
                )
            else:
                bounds.append(self.partner(a))
        lo, hi = bounds
        shape = broadcast(a.shape, lo.shape, hi.shape)
        if len(shape) > self.max_rank:
            raise Unsupported

        def ev(c):
            va, vlo, vhi = (np.asarray(n.ev(c), dtype=np.float64) for n in (a, lo, hi))
            c.note_kink(va - vlo)
            c.note_kink(np.maximum(va, vlo) - vhi)
            c.note_kink(vlo - vhi)
            return np.clip(va, vlo, vhi)

        return Node(f"clip({a.text}, {lo.text}, {hi.text})", ATOM, shape, False, ev, args=(a, lo, hi))

    def op_power(self):
        """a ** b with a tensor exponent: a positive tensor base, or a positive number (2 ** b)."""
        b = self.pick(lambda n: n.rank <= self.max_rank, allow_new_rank=(0, 2))
        if self.flip(0.25):
            base = Node("2", ATOM, (), True, lambda c: 2.0)
        else:
            base = self.positive(self.partner(b))
        shape = broadcast(base.shape, b.shape)
        if len(shape) > self.max_rank:
            raise Unsupported

        def ev(c):
            va, vb = np.asarray(base.ev(c), dtype=np.float64), np.asarray(b.ev(c), dtype=np.float64)
            c.note_domain(va)
            return va**vb

        return Node(f"{paren(base, POW + 1)} ** {paren(b, POW)}", POW, shape, True, ev, args=(base, b))

    def axis_arg(self, rank, *, default_last=False, allow_tuple=True):
        """(text of the axis argument or "", normalized axes)."""
        if rank == 0:
            if default_last:
                return ", axis=None", ()
            return self.choice(["", ", axis=None"]), ()
        forms = ["none", "int", "neg"] + (["tuple"] if allow_tuple else [])
        form = self.choice(forms)
        if form == "none":
            if default_last:
                return ", axis=None", tuple(range(rank))
            return self.choice(["", ", axis=None"]), tuple(range(rank))
        if form in ("int", "neg"):
            ax = self.draw(st.integers(0, rank - 1))
            if default_last and ax == rank - 1 and self.flip(0.5):
                return "", (ax,)
            written = ax - rank if form == "neg" else ax
            return self.choice([f", axis={written}", f", {written}"]), (ax,)
        axes = self.draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
        written = [a - rank if self.flip(0.3) else a for a in axes]
        inner = ", ".join(str(w) for w in written) + ("," if len(written) == 1 else "")
        return f", axis=({inner})", tuple(sorted(axes))

    def note_method(self, a: Node):
        if a.pyfloat:
            self.scalar_method = True

    def op_reduce(self, fn):
        a = self.pick(allow_new_rank=(0, 2))
        self.note_method(a)
        rank = a.rank
        axtext, axes = self.axis_arg(rank, default_last=(fn == "logsumexp"))
        keep = self.flip(0.35)
        kwtext = ", keepdims=True" if keep else (", keepdims=False" if self.flip(0.1) else "")
        ddof = 0
        if fn in ("var", "std") and axes and not any(a.shape[i].is_one() for i in axes) and self.flip():
            ddof = 1
            kwtext += ", ddof=1"
        elif fn in ("var", "std") and self.flip(0.2):
            kwtext += ", ddof=0"
        shape = (
            tuple(ONE if i in axes else d for i, d in enumerate(a.shape))
            if keep
            else tuple(d for i, d in enumerate(a.shape) if i not in axes)
        )
        ax = tuple(axes)

        def ev(c):
            v = np.asarray(a.ev(c))
            if fn == "sum":
                return np.sum(v, axis=ax, keepdims=keep)
            if fn == "mean":
                return np.mean(v, axis=ax, keepdims=keep)
            if fn in ("max", "min"):
                c.note_kink(_runner_up_gap(v, ax))
                return (np.max if fn == "max" else np.min)(v, axis=ax, keepdims=keep)
            if fn in ("var", "std"):
                y = np.var(v, axis=ax, keepdims=keep, ddof=ddof)
                if fn == "var":
                    return y
                y = np.sqrt(y)
                c.note_domain(y[y != 0])  # std's derivative has 1 / y; y = 0 (one entry) is exact
                return y
            return _lse(v, ax, keep)

        pos = a.pos and fn not in ("logsumexp", "var", "std")  # a spread is 0 for a slice of one
        return Node(
            f"{fn}({a.text}{axtext}{kwtext})",
            ATOM,
            shape,
            pos,
            ev,
            kind="pass" if a.rank == 0 else "",
            args=(a,),
        )

    def op_softmax(self, fn):
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 2))
        rank = a.rank
        ax = self.draw(st.integers(0, rank - 1))
        form = self.choice(["kw", "neg", "pos", "omit"])
        if form == "omit":
            ax, axtext = rank - 1, ""
        elif form == "neg":
            axtext = f", axis={ax - rank}"
        elif form == "kw":
            axtext = f", axis={ax}"
        else:
            axtext = f", {ax}"

        def ev(c):
            v = _log_softmax(np.asarray(a.ev(c)), ax)
            return np.exp(v) if fn == "softmax" else v

        return Node(f"{fn}({a.text}{axtext})", ATOM, a.shape, fn == "softmax", ev)

    def op_sce(self):
        logits = self.pick(lambda n: n.rank in (1, 2), allow_new_rank=(1, 2))
        red = self.choice(["", ', reduction="mean"', ', reduction="sum"'])
        batched = logits.rank == 2
        int_ok = all(d.writable() for d in logits.shape[:-1])
        if int_ok and self.flip():
            labels = self.new_input(logits.shape[:-1], "int", high=logits.shape[-1])
            lab_int = True
        else:
            lab_int = False
            how = self.choice(["softmax", "input"])
            writable = all(d.writable() for d in logits.shape)
            if how == "input" and writable and logits.rank <= self.input_rank:
                labels = self.new_input(logits.shape, "prob")
            else:
                base = self.operand(logits.shape)
                labels = Node(
                    f"softmax({base.text})",
                    ATOM,
                    base.shape,
                    True,
                    lambda c: np.exp(_log_softmax(np.asarray(base.ev(c)), -1)),
                )

        def ev(c):
            lp = _log_softmax(np.asarray(logits.ev(c)), -1)
            lab = labels.ev(c)
            if lab_int:
                lab = np.asarray(lab)
                if batched:
                    total = -lp[np.arange(lp.shape[0]), lab].sum()
                else:
                    total = -lp[lab]
            else:
                total = -np.sum(lab * lp)
            if batched and "sum" not in red:
                total = total / lp.shape[0]
            return np.asarray(total)

        return Node(f"softmax_cross_entropy({logits.text}, {labels.text}{red})", ATOM, (), False, ev)

    def op_matmul(self, batched=False):
        if batched:
            a = self.pick(lambda n: 1 <= n.rank <= 3, allow_new_rank=(1, 3))
        else:
            a = self.pick(lambda n: n.rank in (1, 2), allow_new_rank=(1, 2))
        left = self.flip()
        if left:  # a @ b
            inner = a.shape[-1]
        else:  # b @ a
            inner = a.shape[0] if a.rank == 1 else a.shape[-2]
        if not batched:
            brank = self.draw(st.integers(1, 2))
            other = () if brank == 1 else (self.any_dim(),)
            bshape = (inner,) + other if left else other + (inner,)
        else:
            abatch = a.shape[:-2]
            if a.rank >= 3:
                brank = self.draw(st.integers(1, 3))
            else:
                brank = 3
            if brank <= 2:
                other = () if brank == 1 else (self.any_dim(),)
                bshape = (inner,) + other if left else other + (inner,)
            else:
                # batch dims that broadcast against a's batch dims, possibly adding a leading one
                nb = (
                    self.draw(st.integers(1, 2))
                    if a.rank <= 2
                    else self.draw(st.integers(len(abatch), len(abatch) + 1))
                )
                batch = []
                for k in range(nb, 0, -1):
                    if k <= len(abatch):
                        d = abatch[-k]
                        batch.append(self.any_dim() if d.is_one() else (d if self.flip(0.7) else ONE))
                    else:
                        batch.append(self.any_dim())
                mat = (inner, self.any_dim()) if left else (self.any_dim(), inner)
                bshape = tuple(batch) + mat
        if len(bshape) > self.input_rank and not [n for n in self.pool if n.shape == bshape]:
            raise Unsupported
        b = self.operand(bshape)
        x, y = (a, b) if left else (b, a)
        shape = matmul_shape(x.shape, y.shape)
        if len(shape) > self.max_rank or (batched and max(x.rank, y.rank) < 3):
            raise Unsupported
        return Node(
            f"{paren(x, MUL)} @ {paren(y, MUL + 1)}",
            MUL,
            shape,
            x.pos and y.pos,
            lambda c: np.matmul(x.ev(c), y.ev(c)),
        )

    def op_transpose(self):
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(2, 3))
        self.note_method(a)
        rank = a.rank
        if self.flip(0.2):
            perm = tuple(reversed(range(rank)))
            text = f"transpose({a.text})"
        else:
            perm = tuple(self.draw(st.permutations(list(range(rank)))))
            written = [p - rank if self.flip(0.2) else p for p in perm]
            lst = ", ".join(map(str, written))
            text = (
                f"transpose({a.text}, axes=[{lst}])"
                if self.flip(0.8)
                else f"transpose({a.text}, axes=({lst}{',' if rank == 1 else ''}))"
            )
        shape = tuple(a.shape[p] for p in perm)
        return Node(text, ATOM, shape, a.pos, lambda c: np.transpose(a.ev(c), perm), kind="T", args=(a,))

    def op_reshape(self):
        a = self.pick(lambda n: numel(n.shape).monomial(), allow_new_rank=(1, 3))
        self.note_method(a)
        shape = list(a.shape)
        how = self.choice(["flatten", "merge", "split", "ones", "same"])
        if how == "flatten":
            target = [numel(shape)]
        elif how == "merge" and len(shape) >= 2:
            i = self.draw(st.integers(0, len(shape) - 2))
            target = shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2 :]
        elif how == "split" and any(d.names() and len(d.names()) >= 2 for d in shape):
            i = next(k for k, d in enumerate(shape) if d.names() and len(d.names()) >= 2)
            parts = [Dim.sym(s) for s in self.draw(st.permutations(list(shape[i].names())))]
            target = shape[:i] + parts + shape[i + 1 :]
        elif how == "ones":
            target = [d for d in shape if not d.is_one()]
            k = self.draw(st.integers(0, len(target)))
            target = target[:k] + [ONE] + target[k:]
        else:
            target = list(shape)
        if len(target) > self.max_rank:
            raise Unsupported
        unwritable = [k for k, d in enumerate(target) if not d.writable()]
        if len(unwritable) > 1:
            raise Unsupported
        if unwritable:
            minus = unwritable[0]
        elif target and self.flip(0.4):
            minus = self.draw(st.integers(0, len(target) - 1))
        else:
            minus = None
        if minus is not None and not target[minus].monomial():
            raise Unsupported
        written = ["-1" if k == minus else d.writable() for k, d in enumerate(target)]
        tshape = tuple(target)
        return Node(
            f"reshape({a.text}, [{', '.join(written)}])",
            ATOM,
            tshape,
            a.pos,
            lambda c: np.reshape(a.ev(c), tuple(d.size(c.sizes) for d in tshape)),
            kind="T",
            args=(a,),
        )

    def op_einsum(self):
        a = self.pick(lambda n: 1 <= n.rank <= 3, allow_new_rank=(1, 3))
        letters = iter("ijklmnop")
        dims = {}
        ta = ""
        for d in a.shape:
            ch = next(letters)
            dims[ch] = d
            ta += ch
        terms, operands = [ta], [a]
        for _ in range(self.choice([0, 1, 1, 1, 2])):
            known = list(dims)
            keep = self.draw(st.lists(st.sampled_from(known), unique=True, max_size=min(3, len(known))))
            fresh = []
            for _ in range(self.draw(st.integers(0 if keep else 1, 1))):
                ch = next(letters)
                dims[ch] = self.any_dim(allow_one=False)
                fresh.append(ch)
            term = list(keep) + fresh
            term = "".join(self.draw(st.permutations(term)))
            if not term or len(term) > self.input_rank:
                raise Unsupported
            operands.append(self.operand(tuple(dims[ch] for ch in term)))
            terms.append(term)
        everything = list(dims)
        out = self.draw(
            st.lists(st.sampled_from(everything), unique=True, max_size=min(self.max_rank, len(everything)))
        )
        out = "".join(out)
        sub = ",".join(terms) + "->" + out
        shape = tuple(dims[ch] for ch in out)
        ops = tuple(operands)
        args = ", ".join(o.text for o in ops)
        return Node(
            f'einsum("{sub}", {args})',
            ATOM,
            shape,
            all(o.pos for o in ops),
            lambda c: np.einsum(sub, *[np.asarray(o.ev(c)) for o in ops]),
            kind="T",
        )

    def op_minmax(self, fn):
        a = self.pick(lambda n: n.rank <= self.max_rank, allow_new_rank=(0, 3))
        if self.flip(0.15):
            lit = self.choice(["0.0", "0.5", "-0.25"])
            b = Node(
                lit,
                ATOM if not lit.startswith("-") else UNARY,
                (),
                False,
                lambda c, v=float(lit): np.asarray(v),
            )
        else:
            b = self.partner(a)
        if self.flip():
            a, b = b, a
        shape = broadcast(a.shape, b.shape)
        if len(shape) > self.max_rank:
            raise Unsupported
        npf = np.maximum if fn == "maximum" else np.minimum

        def ev(c):
            va, vb = a.ev(c), b.ev(c)
            c.note_kink(np.asarray(va) - np.asarray(vb))
            return npf(va, vb)

        pos = (a.pos or b.pos) if fn == "maximum" else (a.pos and b.pos)
        return Node(f"{fn}({a.text}, {b.text})", ATOM, shape, pos, ev, kind="mask", args=(a, b))

    def op_take(self):
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 3))
        ax = self.draw(st.integers(0, a.rank - 1))
        irank = self.draw(st.integers(0, 2))
        ishape = tuple(self.any_dim(allow_one=self.flip(0.2)) for _ in range(irank))
        shape = a.shape[:ax] + ishape + a.shape[ax + 1 :]
        if len(shape) > self.max_rank:
            raise Unsupported
        idx = self.new_input(ishape, "int", high=a.shape[ax])
        form = self.choice(["kw", "neg", "omit"]) if ax == 0 else self.choice(["kw", "neg"])
        axtext = "" if form == "omit" else f", axis={ax - a.rank if form == 'neg' else ax}"
        return Node(
            f"take({a.text}, {idx.text}{axtext})",
            ATOM,
            shape,
            a.pos,
            lambda c: np.take(a.ev(c), c.values[idx.name], axis=ax),
        )

    def op_take_along_axis(self):
        """numpy.take_along_axis: indices of a's rank; off the axis each index dim is a's dim or 1 (or any
        dim where a's is 1: a broadcast, so entries are picked repeatedly and the scatter adds up)."""
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 3))
        ax = self.draw(st.integers(0, a.rank - 1))
        ishape = []
        for k, d in enumerate(a.shape):
            if k == ax:
                ishape.append(self.choice([ONE, ONE, *self.dims]))
            elif d.is_one():
                ishape.append(self.any_dim())
            else:
                ishape.append(self.choice([d, d, ONE]) if d.writable() else ONE)
        shape = tuple(ishape[k] if k == ax or a.shape[k].is_one() else a.shape[k] for k in range(a.rank))
        idx = self.new_input(tuple(ishape), "int", high=a.shape[ax])
        written = ax - a.rank if self.flip(0.3) else ax
        return Node(
            f"take_along_axis({a.text}, {idx.text}, {self.choice(['axis=', ''])}{written})",
            ATOM,
            shape,
            a.pos,
            lambda c: np.take_along_axis(np.asarray(a.ev(c)), c.values[idx.name], axis=ax),
        )

    def op_pick_extreme(self, fn):
        """a's entries where b is largest (smallest) along an axis: take_along_axis(a, argmax(b, axis,
        keepdims=True), axis), b a or another value of a's shape; a near-tie in b is a kink."""
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 3))
        same = [n for n in self.pool if n.shape == a.shape and n is not a]
        b = self.choice(same) if same and self.flip() else a
        ax = self.draw(st.integers(0, a.rank - 1))
        written = ax - a.rank if self.flip(0.3) else ax
        pick = np.argmax if fn == "argmax" else np.argmin

        def ev(c):
            vb = np.asarray(b.ev(c))
            c.note_kink(_runner_up_gap(vb, (ax,)))
            index = pick(vb, axis=ax, keepdims=True)
            return np.take_along_axis(np.asarray(a.ev(c)), index, axis=ax)

        shape = tuple(ONE if k == ax else d for k, d in enumerate(a.shape))
        text = f"take_along_axis({a.text}, {fn}({b.text}, axis={written}, keepdims=True), axis={written})"
        return Node(text, ATOM, shape, a.pos, ev)

    def op_concatenate(self):
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 3))
        ax = self.draw(st.integers(0, a.rank - 1))
        ops = [a]
        for _ in range(self.choice([1, 1, 1, 2])):
            shape = list(a.shape)
            shape[ax] = self.choice([a.shape[ax], a.shape[ax], *self.dims, ONE])
            if not shape[ax].writable():
                shape[ax] = a.shape[ax]
            ops.append(self.operand(tuple(shape)))
        if self.flip():
            ops = ops[::-1]
        total = ops[0].shape[ax]
        for o in ops[1:]:
            total = total + o.shape[ax]
        shape = a.shape[:ax] + (total,) + a.shape[ax + 1 :]
        written = (
            self.choice(["", f", axis={ax}", f", axis={ax - a.rank}"])
            if ax == 0
            else self.choice([f", axis={ax}", f", axis={ax - a.rank}"])
        )
        bracket = "({})" if self.flip(0.8) else "[{}]"
        seq = bracket.format(", ".join(o.text for o in ops))
        ops_t = tuple(ops)
        return Node(
            f"concatenate({seq}{written})",
            ATOM,
            shape,
            all(o.pos for o in ops_t),
            lambda c: np.concatenate([np.asarray(o.ev(c)) for o in ops_t], axis=ax),
        )

    def op_where(self):
        """where(cond, a, b): b a partner tensor or a number, cond a mask that broadcasts with both."""
        a = self.pick(lambda n: n.rank <= self.max_rank, allow_new_rank=(0, 2))
        if self.flip(0.3):
            lit = self.choice(["0.0", "-3.0", "2.5", "-0.5"])
            b = Node(lit, ATOM if lit[0] != "-" else UNARY, (), False, lambda c, v=float(lit): np.asarray(v))
        else:
            b = self.partner(a)
        cond = self.mask(a)
        if b.kind != "input" and not b.shape and self.flip(0.3):  # two numbers: the mask as numbers
            a = Node("1.0", ATOM, (), True, lambda c: np.asarray(1.0))
        if self.flip():
            a, b = b, a
        try:
            shape = broadcast(cond.shape, a.shape, b.shape)
        except AssertionError:
            raise Unsupported from None
        if len(shape) > self.max_rank:
            raise Unsupported

        def ev(c):
            return np.where(cond.ev(c), a.ev(c), b.ev(c))

        return Node(f"where({cond.text}, {a.text}, {b.text})", ATOM, shape, a.pos and b.pos, ev)

    def mask(self, like: Node, depth: int = 0) -> Node:
        """A bool tensor that broadcasts with ``like``: a bool input, a comparison of ``like`` (or a
        tensor that broadcasts with it) with a number or a tensor, or masks combined with & | ~.
        The reference notes the distance from each comparison's boundary (a kink), so the drawn
        values keep finite differences away from where the mask flips."""
        how = self.choice(["input", "compare", "compare", "combine" if depth < 2 else "compare", "not"])
        if how == "input":
            shape = self.partner_shape(like.shape)
            if not all(d.writable() for d in shape) or len(shape) > self.input_rank:
                raise Unsupported
            return self.new_input(shape, "bool")
        if how == "not":
            inner = self.mask(like, depth + 1)
            return Node(f"~{paren(inner, UNARY)}", UNARY, inner.shape, False, lambda c: ~inner.ev(c))
        if how == "combine":
            p, q = self.mask(like, depth + 1), self.mask(like, depth + 1)
            sym, level, fn = self.choice([("&", BAND, np.logical_and), ("|", BOR, np.logical_or)])
            try:
                shape = broadcast(p.shape, q.shape)
            except AssertionError:
                raise Unsupported from None
            text = f"{paren(p, level)} {sym} {paren(q, level + 1)}"
            return Node(text, level, shape, False, lambda c: fn(p.ev(c), q.ev(c)))
        x = like if self.flip() else self.partner(like)
        if self.flip(0.4):
            lit = self.choice(["0", "0.5", "-0.25", "1.0"])
            y = Node(lit, ATOM if lit[0] != "-" else UNARY, (), False, lambda c, v=float(lit): np.asarray(v))
        else:
            y = self.partner(x)
        if self.flip():
            x, y = y, x
        sym = self.choice([">", ">=", "<", "<=", "==", "!="])
        fn = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
        fn |= {"==": np.equal, "!=": np.not_equal}

        def ev(c):
            vx, vy = x.ev(c), y.ev(c)
            c.note_kink(np.asarray(vx) - np.asarray(vy))
            return fn[sym](vx, vy)

        try:
            shape = broadcast(x.shape, y.shape)
        except AssertionError:
            raise Unsupported from None
        return Node(f"{paren(x, CMP + 1)} {sym} {paren(y, CMP + 1)}", CMP, shape, False, ev)

    # static indexing: each axis kept whole, picked at one position, or sliced; lengths stay >= 1
    # for every size the dims are drawn with (2 .. 6), so a slice is never empty
    INDEX_FORMS = (":", "0", "-1", "1:", ":-1", "-2:", "1:-1", "NAME", "::1")

    def op_index(self):
        a = self.pick(lambda n: n.rank >= 1, allow_new_rank=(1, 3))
        texts, index, shape = [], [], []
        for d in a.shape:
            forms = (":", "0", "-1") if d.is_one() else self.INDEX_FORMS
            form = self.choice(forms)
            if form == "1:-1" and d.size(self.sizes) < 3:
                form = "1:"
            if form == "NAME":
                form = f":{d.writable()}" if d.writable() else ":"
            if self.flip(0.15):
                texts.append("None")
                index.append(None)
                shape.append(ONE)
            texts.append(form)
            sl, length = _index_form(form, d)
            index.append(sl)
            if length is not None:
                shape.append(length)
        if all(t == ":" for t in texts[-2:]) and len(texts) > 1 and self.flip():
            texts, index = texts[:-1], index[:-1]  # trailing whole axes are implied
        if texts and texts[0] == ":" and self.flip(0.3):
            k = next((i for i, t in enumerate(texts) if t != ":"), len(texts))
            texts = ["..."] + texts[k:]
            index = [Ellipsis] + index[k:]
        if len(shape) > self.max_rank:
            raise Unsupported
        idx = tuple(index)
        return Node(
            f"{paren(a, ATOM)}[{', '.join(texts)}]",
            ATOM,
            tuple(shape),
            a.pos,
            lambda c: np.asarray(a.ev(c))[idx],
        )

    def op_split(self):
        """split(concatenate(...), sizes, axis): the axis is a sum of dims (N + M + N), cut at other
        places than the concatenation's (sizes [N + M, N] or [N, M + N]) or at the same ones."""
        base = self.pick(lambda n: 1 <= n.rank < self.max_rank, allow_new_rank=(1, 2))
        ax = self.draw(st.integers(0, base.rank - 1))
        if not base.shape[ax].writable() or base.shape[ax].is_one():
            raise Unsupported
        other = self.any_dim(allow_one=False)
        widths = [base.shape[ax], other, base.shape[ax]][: self.choice([2, 3])]
        parts = [base] + [self.operand(base.shape[:ax] + (w,) + base.shape[ax + 1 :]) for w in widths[1:]]
        total = widths[0]
        for w in widths[1:]:
            total = total + w
        cuts = self.choice(
            [[widths[0], total + _neg(widths[0])], [total + _neg(widths[-1]), widths[-1]], widths]
        )
        axtext = self.choice([f"axis={ax}", f"axis={ax - base.rank}"])
        cat = f"concatenate(({', '.join(p.text for p in parts)}), {axtext})"
        sizes = ", ".join(_sum_text(w) for w in cuts)
        parts_t = tuple(parts)

        def whole(c):
            return np.concatenate([np.asarray(p.ev(c)) for p in parts_t], axis=ax)

        pieces, start = [], ONE + _neg(ONE)
        for w in cuts:
            lo, hi = start, start + w
            pieces.append(
                Node(
                    "",
                    ATOM,
                    base.shape[:ax] + (w,) + base.shape[ax + 1 :],
                    all(p.pos for p in parts_t),
                    lambda c, lo=lo, hi=hi: _take_range(whole(c), lo.size(c.sizes), hi.size(c.sizes), ax),
                )
            )
            start = hi
        return Node(
            f"split({cat}, [{sizes}], {axtext})", ATOM, (), False, None, kind="split", args=tuple(pieces)
        )

    def op_stack(self):
        a = self.pick(lambda n: 0 < n.rank < self.max_rank, allow_new_rank=(1, 2))
        others = [self.operand(a.shape) for _ in range(self.choice([1, 1, 2]))]
        ops_t = (a, *others)
        if self.flip():
            ops_t = ops_t[::-1]
        ax = self.draw(st.integers(0, a.rank))
        written = self.choice(
            ["", f", axis={ax}", f", axis={ax - a.rank - 1}"]
            if ax == 0
            else [f", axis={ax}", f", axis={ax - a.rank - 1}"]
        )
        shape = a.shape[:ax] + (Dim._make({(): len(ops_t)}),) + a.shape[ax:]
        seq = "(" + ", ".join(o.text for o in ops_t) + ")"
        return Node(
            f"stack({seq}{written})",
            ATOM,
            shape,
            all(o.pos for o in ops_t),
            lambda c: np.stack([np.asarray(o.ev(c)) for o in ops_t], axis=ax),
        )

    # ---- issue 9: pad, convolutions, pools ------------------------------------------------------

    def _samples(self, rank) -> Node:
        """An operand of exactly this rank (a pool node, or a new input of any dims)."""
        try:
            return self.pick(lambda n: n.rank == rank and all(d.writable() for d in n.shape))
        except Unsupported:
            return self.new_input(tuple(self.any_dim(allow_one=self.flip(0.2)) for _ in range(rank)))

    def op_conv(self, n: int):
        x = self._samples(n + 2)
        # (kernel, dilation, padding) with 2 * padding = dilation * (kernel - 1): the size is kept
        k, d, p = self.choice([(1, 1, 0), (3, 1, 1), (3, 2, 2), (2, 2, 1)])
        kdim = Dim((((), k),))
        w = self.operand((self.any_dim(allow_one=self.flip(0.2)), x.shape[1]) + (kdim,) * n)
        shape = (x.shape[0], w.shape[0]) + x.shape[2:]
        outer = self.flip(0.3)  # the padding as a pad() around the input instead of padding=
        attrs = "" if d == 1 else f", dilation={d}"
        if outer and p:
            src = f"pad({x.text}, {tuple([(0, 0)] * 2 + [(p, p)] * n)})"
        else:
            src, attrs = x.text, attrs + (f", padding={p}" if p else "")
        sub = "ncl,oc->nol" if n == 1 else "nchw,oc->nohw"

        def ev(c):
            xp = np.pad(np.asarray(x.ev(c)), [(0, 0), (0, 0)] + [(p, p)] * n)
            wv = np.asarray(w.ev(c))
            out = 0.0
            for offs in np.ndindex(*(k,) * n):  # the definition, one kernel term at a time
                view = xp[
                    (slice(None), slice(None))
                    + tuple(slice(o * d, o * d + xp.shape[2 + i] - d * (k - 1)) for i, o in enumerate(offs))
                ]
                out = out + np.einsum(sub, view, wv[(slice(None), slice(None)) + offs])
            return out

        return Node(f"conv{n}d({src}, {w.text}{attrs})", ATOM, shape, False, ev, args=(x, w))

    def op_pool(self, fn: str):
        a = self.pick(lambda n: 2 <= n.rank <= self.max_rank, allow_new_rank=(2, 3))
        k, p = self.choice([((3, 3), (1, 1)), ((1, 3), (0, 1)), ((3, 1), (1, 0)), ((1, 1), (0, 0))])
        ktext = str(k[0]) if k[0] == k[1] else str(k)
        ptext = "" if not any(p) else (f", padding={p[0]}" if p[0] == p[1] else f", padding={p}")
        text = f"{fn}({a.text}, {ktext}, stride=1{ptext})"
        fill = -np.inf if fn == "max_pool2d" else 0.0

        def ev(c):
            v = np.asarray(a.ev(c))
            lead = [(0, 0)] * (v.ndim - 2)
            vp = np.pad(v, lead + [(p[0], p[0]), (p[1], p[1])], constant_values=fill)
            h, w = v.shape[-2:]
            parts = np.stack([vp[..., i : i + h, j : j + w] for i in range(k[0]) for j in range(k[1])])
            if fn == "avg_pool2d":
                return parts.mean(axis=0)
            if len(parts) > 1:
                top = np.sort(parts, axis=0)
                gap = top[-1] - top[-2]
                c.note_kink(gap[np.isfinite(gap)])  # a tie within reach of the difference step
            return parts.max(axis=0)

        return Node(text, ATOM, a.shape, a.pos, ev, args=(a,))

    def op_pad(self):
        a = self.pick(lambda n: 1 <= n.rank <= self.max_rank, allow_new_rank=(1, 3))
        widths = tuple((self.choice([0, 1, 2]), self.choice([0, 1])) for _ in range(a.rank))
        value = self.choice(["0", "0.5", "-1.5"])
        shape = tuple(d + Dim((((), lo + hi),)) if lo + hi else d for d, (lo, hi) in zip(a.shape, widths))
        form = f"{widths}" if self.flip(0.8) or len(set(widths)) > 1 else str(widths[0][0])
        if form != f"{widths}":
            widths = ((widths[0][0], widths[0][0]),) * a.rank
            shape = tuple(d + Dim((((), 2 * widths[0][0]),)) if widths[0][0] else d for d in a.shape)
        text = f"pad({a.text}, {form}" + ("" if value == "0" else f", value={value}") + ")"
        return Node(
            text,
            ATOM,
            shape,
            a.pos and float(value) > 0,
            lambda c: np.pad(np.asarray(a.ev(c)), widths, constant_values=float(value)),
            args=(a,),
        )

    def make(self, kind) -> Node:
        if kind in ("add", "sub", "mul", "div"):
            return self.op_binary(kind)
        if kind in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "square", "abs") + ISSUE7_OPS:
            return self.op_unary(kind)
        if kind in ("sum", "mean", "logsumexp") + ISSUE9_REDUCE_OPS:
            return self.op_reduce(kind)
        if kind in ("softmax", "log_softmax"):
            return self.op_softmax(kind)
        if kind in ("maximum", "minimum"):
            return self.op_minmax(kind)
        if kind in ("sin", "cos", "log1p", "expm1", "erf", "gelu"):
            return self.op_elem(kind)
        if kind == "clip":
            return self.op_clip()
        if kind == "power":
            return self.op_power()
        return {
            "pow": self.op_pow,
            "neg": self.op_neg,
            "T": self.op_T,
            "softmax_cross_entropy": self.op_sce,
            "matmul": self.op_matmul,
            "batched_matmul": lambda: self.op_matmul(batched=True),
            "transpose": self.op_transpose,
            "reshape": self.op_reshape,
            "einsum": self.op_einsum,
            "take": self.op_take,
            "take_along_axis": self.op_take_along_axis,
            "argmax": lambda: self.op_pick_extreme("argmax"),
            "argmin": lambda: self.op_pick_extreme("argmin"),
            "concatenate": self.op_concatenate,
            "where": self.op_where,
            "index": self.op_index,
            "split": self.op_split,
            "stack": self.op_stack,
            "pad": self.op_pad,
            "conv1d": lambda: self.op_conv(1),
            "conv2d": lambda: self.op_conv(2),
            "max_pool2d": lambda: self.op_pool("max_pool2d"),
            "avg_pool2d": lambda: self.op_pool("avg_pool2d"),
        }[kind]()

    # ---- the whole graph -----------------------------------------------------------------------

    def step(self, focus: str | None = None) -> bool:
        for _ in range(8):
            kind = focus or self.choice(self.ops)
            saved = (list(self.inputs), list(self.pool), self.pending)
            try:
                node = self.make(kind)
            except Unsupported:
                self.inputs, self.pool, self.pending = saved
                self.failed.append(kind)
                continue
            self.used.append(kind)
            if node.kind == "split":
                self.flush()
                self.bind_split(node)
                return True
            inner = node.ev

            def noted(c, inner=inner):
                v = inner(c)
                c.note_value(v)
                return v

            node.ev = noted
            self.flush()
            if self.flip(0.3):
                self.pending = node
            else:
                self.bind(node)
            return True
        return False

    def finish(self):
        """Optionally close the graph with a scalar objective that reuses several entries."""
        self.flush()
        if not self.entries:
            a = self.pick(allow_new_rank=(1, 2))
            self.bind(Node(f"square({a.text})", ATOM, a.shape, False, lambda c: np.square(a.ev(c))))
        if self.flip(0.55):
            last = self.pool[-1]
            parts = [last]
            others = self.pool[:-1]
            if others and self.flip(0.5):
                parts.append(self.choice(others))
            terms, evs = [], []
            for p in parts:
                self.note_method(p)
                red = self.choice(["sum", "mean"])
                terms.append(f"{red}({p.text})")
                evs.append((red, p))
            text = " + ".join(terms) if len(terms) == 1 or self.flip() else f"{terms[0]} - 0.5 * {terms[1]}"
            sign = -0.5 if " - 0.5 * " in text else 1.0

            def ev(c, evs=tuple(evs)):
                total = 0.0
                for k, (red, p) in enumerate(evs):
                    v = np.asarray(p.ev(c))
                    total = total + (sign if k else 1.0) * (np.sum(v) if red == "sum" else np.mean(v))
                return np.asarray(total)

            self.bind(Node(text, ADD, (), False, ev))


@dataclass
class Plan:
    ops: tuple
    max_rank: int
    input_rank: int
    min_steps: int = 1
    max_steps: int = 5
    focus: str | None = None  # an op that every drawn graph contains


def yaml_scalar(text: str) -> str:
    if text[0] in "-[{&*!|>'\"%@`" or ": " in text or " #" in text:
        return "'" + text.replace("'", "''") + "'"
    return text


def focused(plan: Plan, op: str) -> Plan:
    return replace(plan, focus=op)


@st.composite
def cases(draw, plan: Plan):
    ndims = draw(st.integers(2, 4))
    sizes_list = draw(st.permutations(list(range(2, 7))))[:ndims]
    sizes = dict(zip(DIM_NAMES, sizes_list))
    b = Builder(draw, sizes, plan.ops, plan.max_rank, plan.input_rank)
    steps = draw(st.integers(plan.min_steps, plan.max_steps))
    focus_at = draw(st.integers(0, steps - 1)) if plan.focus else -1
    for k in range(steps):
        if k == focus_at:
            assume(b.step(plan.focus))
        else:
            b.step()
    b.finish()
    names = list(entry_nodes(b.entries))
    output = names[-1]
    explicit_output = draw(st.sampled_from(["omit", "last", "earlier"]))
    if explicit_output == "earlier" and len(names) > 1:
        output = draw(st.sampled_from(names[:-1]))
    floats = [i.name for i in b.inputs if i.is_float]
    wrt_mode = draw(st.sampled_from(["default", "default", "subset"]))
    wrt = tuple(floats)
    if wrt_mode == "subset" and floats:
        perm = draw(st.permutations(floats))
        wrt = tuple(perm[: draw(st.integers(1, len(floats)))])
    lines = []
    if draw(st.booleans()):
        lines.append("name: prop")
    lines.append("inputs:")
    for i in b.inputs:
        if i.kind in ("int", "bool"):
            lines.append(f"  {i.name}: {{shape: {shape_text(i.shape)}, dtype: {i.kind}}}")
        elif draw(st.integers(0, 4)) == 0:
            lines.append(f"  {i.name}: {{shape: {shape_text(i.shape)}, dtype: float}}")
        else:
            lines.append(f"  {i.name}: {shape_text(i.shape)}")
    lines.append("graph:")
    for name, node in b.entries:
        lines.append(f"  {name}: {yaml_scalar(node.text)}")
    if explicit_output != "omit" or output != names[-1]:
        lines.append(f"output: {output}")
    if wrt_mode == "subset" or (floats and draw(st.integers(0, 4)) == 0):
        lines.append(f"wrt: [{', '.join(wrt)}]")
    if not floats:
        wrt = ()
    out_node = entry_nodes(b.entries)[output]
    if out_node.pyfloat:
        b.scalar_method = True  # the module reads `out.dtype`
    # entries after the output are dead code: keep them, the generated code must not care
    return Case(
        "\n".join(lines) + "\n", sizes, b.inputs, b.entries, output, wrt, tuple(b.used), b.scalar_method
    )
