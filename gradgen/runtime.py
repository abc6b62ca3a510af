"""What a generated module checks at run time beyond ranks and dims, worked out from the typed graph.

Two kinds of value check, both emitted once, in the module's input-checking function (so `forward`
and `value_and_grad` agree):

- an int input that indexes (softmax cross-entropy's class labels, `take`'s and
  `take_along_axis`'s indices) must hold values in
  ``0 <= v < size`` of the axis it indexes: NumPy would wrap a negative index around to the end of the
  axis, a silent wrong answer;
- a dim that an op divides by or takes a max over must not be 0: a mean of no values, a softmax
  cross-entropy averaged over no rows or with no classes, a max-shifted softmax, log-softmax or
  logsumexp over an empty axis, a max or min, a variance or a standard deviation of no values.  Sums
  over nothing are 0 and stay allowed;
- a size that must be at least some number (``minimum_checks``): a window's span, and more entries per
  slice than a variance's or standard deviation's ddof.

The planner renders each ``Dim`` with its own variable names; this module only decides what to check.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradgen.dims import Dim, at_least
from gradgen.ir import Const, TypedGraph
from gradgen.numbers import run_symbols, run_value
from gradgen.ops import norm_axes
from gradgen.ops_index import dim_text, index_text, node_items, parts, run_time_needs


@dataclass(frozen=True)
class IndexCheck:
    input: str  # the int input
    rank: int  # its rank
    size: Dim  # the length of the axis it indexes: valid values are 0 <= v < size
    role: str  # what the input holds, for the message: "class labels for loss (softmax_cross_entropy)"


@dataclass(frozen=True)
class NonEmpty:
    dim: Dim  # a dim (a symbol, or a sum from concatenate) that must not be 0 at run time
    reason: str  # why, for the message: "loss is a mean over it (undefined for no values)"


@dataclass(frozen=True)
class SizeOrder:
    lo: Dim  # a static index needs lo <= hi, which the spec's dims alone do not prove (x[:, :K] on D)
    hi: Dim
    reason: str  # what needs it, for the message: "b: the index [..., :K]"


def order_checks(tg: TypedGraph, live: set[int]) -> tuple[SizeOrder, ...]:
    """The size conditions of the live static indexes that only the run-time sizes can decide."""
    out: dict[tuple[Dim, Dim], SizeOrder] = {}
    for n in tg.graph.nodes:
        if n.id in live and n.op in ("index", "split"):
            shape = tg.types[n.args[0]].shape
            items = node_items(n, shape)
            for a, b in run_time_needs(None, items, shape):
                hi, lo = parts(b + Dim.const(-1) * a)  # a <= b as lo <= hi, both sides positive
                what = "the index" if n.op == "index" else "the split piece"
                reason = f"{n.entry}: {what} {index_text(items)}"
                out.setdefault((lo, hi), SizeOrder(lo, hi, reason))
    return tuple(out.values())


def order_message(c: SizeOrder) -> str:
    return f"{c.reason} is out of range: it needs {dim_text(c.lo)} <= {dim_text(c.hi)}"


def index_checks(tg: TypedGraph, live: set[int]) -> tuple[IndexCheck, ...]:
    """One check per (int input, indexed size) pair among the live nodes, in graph order."""
    g = tg.graph
    out: list[IndexCheck] = []
    seen: set[tuple[str, Dim]] = set()
    for n in g.nodes:
        if n.id not in live:
            continue
        if n.op == "softmax_cross_entropy":
            logits, labels = n.args[0], n.args[1]
            if tg.types[labels].dtype != "int":
                continue
            size, role = tg.types[logits].shape[-1], f"class labels for {n.entry} (softmax_cross_entropy)"
        elif n.op == "take_along_axis":
            a, labels = n.args[0], n.args[1]
            t = tg.types[a]
            axis = norm_axes(None, n.attr("axis"), t.rank)[0]
            size, role = t.shape[axis], f"indices for {n.entry} (take_along_axis, axis {axis})"
        elif n.op == "take":
            a, labels = n.args[0], n.args[1]
            t = tg.types[a]
            axis = norm_axes(None, n.attr("axis", 0), t.rank)[0]
            size, role = t.shape[axis], f"indices for {n.entry} (take, axis {axis})"
        else:
            continue
        src = g.nodes[labels]
        if src.op != "input":  # computed (argmax): in range by construction, proven at build time
            continue
        if (src.name, size) not in seen:
            seen.add((src.name, size))
            out.append(IndexCheck(src.name, tg.types[labels].rank, size, role))
    return tuple(out)


def nonempty_checks(tg: TypedGraph, live: set[int]) -> tuple[NonEmpty, ...]:
    """The dims that the live nodes need nonzero, each once (the first reason found), in graph order."""
    g = tg.graph
    found: dict[Dim, str] = {}
    for n in g.nodes:
        if n.id not in live or n.op == "input":
            continue
        for dim, reason in _needs(tg, n):
            for d in _zero_factors(dim):
                found.setdefault(d, reason)
    return tuple(NonEmpty(d, r) for d, r in found.items())


def _spread_need(tg: TypedGraph, n) -> tuple[Dim, int, str] | None:
    """(count, least, what): a variance or standard deviation with ddof needs more than ddof entries per
    slice; with several reduced axes their product is the count."""
    t = tg.types[n.args[0]]
    count = Dim.const(1)
    for i in norm_axes(None, n.attr("axis"), t.rank):
        count = count * t.shape[i]
    ddof = n.attr("ddof", 0)
    if ddof == 0 or count.is_const:  # a literal count is checked when the spec is built
        return None
    return (
        count,
        ddof + 1,
        f"{n.entry} is a {n.op} with ddof={ddof} over it (it needs at least {ddof + 1} entries)",
    )


def _needs(tg: TypedGraph, n) -> list[tuple[Dim, str]]:
    """(dim, reason) pairs: node n is undefined when dim is 0."""
    return _number_needs(n) + _op_needs(tg, n)


WINDOW_OPS = {"conv1d": 1, "conv2d": 2, "max_pool2d": 2, "avg_pool2d": 2}  # op -> spatial axes


def _op_needs(tg: TypedGraph, n) -> list[tuple[Dim, str]]:
    """What the op itself needs: entries to average, normalise over or pick a class from."""
    t = tg.types[n.args[0]] if n.args and isinstance(n.args[0], int) else None
    if n.op == "mean":
        axes = norm_axes(None, n.attr("axis"), t.rank)
        reason = f"{n.entry} is a mean over it (undefined for no values)"
        return [(t.shape[i], reason) for i in axes]
    if n.op in ("max", "min"):
        axes = norm_axes(None, n.attr("axis"), t.rank)
        reason = f"{n.entry} takes the {n.op} over it (undefined for no values)"
        return [(t.shape[i], reason) for i in axes]
    if n.op in ("var", "std"):
        axes = norm_axes(None, n.attr("axis"), t.rank)
        reason = f"{n.entry} is a {n.op} over it (undefined for no values)"
        return [(t.shape[i], reason) for i in axes]
    if n.op in ("softmax", "log_softmax", "logsumexp"):
        axes = norm_axes(None, n.attr("axis", -1), t.rank)
        reason = f"{n.entry} needs an entry along it ({n.op})"
        return [(t.shape[i], reason) for i in axes]
    if n.op in WINDOW_OPS:  # a window must fit into the (padded) input; none fits into no entries
        reason = f"{n.entry} slides a window along it ({n.op})"
        return [(d, reason) for d in t.shape[-WINDOW_OPS[n.op] :]]
    if n.op == "softmax_cross_entropy":
        out = [(t.shape[-1], f"{n.entry} needs at least one class (softmax_cross_entropy)")]
        if t.rank == 2 and n.attr("reduction", "mean") == "mean":
            reason = f"{n.entry} is a mean of softmax_cross_entropy over it (no rows)"
            out.append((t.shape[0], reason))
        return out
    return []


def _number_needs(n) -> list[tuple[Dim, str]]:
    """A number computed from dims (x / sqrt(D), x * log(N)) that breaks, or divides by 0, when one of
    its dims is 0: found by computing it with that dim 0 and the others at distinct positive sizes."""
    out = []
    for k, a in enumerate(n.args):
        if not (isinstance(a, Const) and a.num is not None):
            continue
        names = run_symbols(a.num)
        for s in names:
            sizes = {other: 2 + i for i, other in enumerate(names)} | {s: 0}
            try:
                if run_value(a.num, sizes) == 0 and n.op == "div" and k == 1:
                    out.append((Dim.sym(s), f"{n.entry} divides by {a.text}"))
            except (ArithmeticError, ValueError):
                out.append((Dim.sym(s), f"{n.entry} computes {a.text}, which is undefined then"))
    return out


def _zero_factors(d: Dim) -> list[Dim]:
    """Dims whose being 0 makes d 0: each symbol of a product (B*T is 0 when B or T is), else d itself
    (a sum N + M of positive-coefficient terms is 0 only when every term is, so it is checked whole)."""
    if d.is_const:
        return []  # a literal dim is a positive int
    if len(d.terms) == 1:
        monomial, _ = d.terms[0]
        return [Dim.sym(s) for s in dict.fromkeys(monomial)]
    return [d]


@dataclass(frozen=True)
class AtLeast:
    dim: Dim  # an input's spatial size that a window op slides along, or the entries of var's slices
    minimum: int  # a window's span less the padding (a smaller size has no window at all), or ddof + 1
    reason: str  # for the message: "c3 slides a window of 5 along it (conv1d)"


def minimum_checks(tg: TypedGraph, live: set[int]) -> tuple[AtLeast, ...]:
    """The sizes that a convolution's or a pool's windows need (NumPy's sliding_window_view would
    refuse a smaller one without naming the input), each once with the largest need, in graph order;
    a size the spec already proves large enough (a literal, 4*S for a window of 3) is not checked."""
    from gradgen.ops_conv import window_needs

    out: dict[Dim, AtLeast] = {}
    for n in tg.graph.nodes:
        if n.id in live and n.op in WINDOW_OPS:
            for dim, need, what in window_needs(tg, n):
                if need > 1 and not at_least(dim, need) and (dim not in out or out[dim].minimum < need):
                    out[dim] = AtLeast(dim, need, f"{n.entry} slides {what} along it ({n.op})")
        if n.id in live and n.op in ("var", "std") and (spread := _spread_need(tg, n)):
            dim, need, reason = spread
            if not at_least(dim, need) and (dim not in out or out[dim].minimum < need):
                out[dim] = AtLeast(dim, need, reason)
    return tuple(out.values())
