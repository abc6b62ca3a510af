"""Op rows for static indexing: ``x[...]`` with constant bounds, ``stack``, and the scatter that is
the transpose of an index (``split`` is lowered to one index per piece, see ``gradgen/slicing.py``).

An index is stored on its node as a tuple of items, each one of

- ``("int", d)``: a single position (the axis is dropped); ``d`` a ``Dim``, negative counts from the end;
- ``("slice", start, stop, step)``: ``start``/``stop`` a ``Dim`` or None, ``step`` a positive int or None;
- ``("new",)``: ``None``, a new axis of size 1;
- ``("...",)``: the ellipsis, as many whole axes as the other items leave.

A bound with no positive term (``-1``, ``-K``) counts from the end, any other (``K``, ``D - K``) from
the start, whatever the sizes; that it lies within its axis is proven when the spec is built if it
holds for every size, refused if it never holds, and otherwise checked by the generated module when it
runs (``K <= D`` for ``x[:, :K]`` on ``x: [N, D]``, ``1 <= K`` for ``x[-K:]``, ``K <= D`` for
``x[:, D - K:]``), so NumPy never reads a bound the other way round.
"""

from __future__ import annotations

from gradgen.dims import Dim, shape_str
from gradgen.expr import Bin, E, Index, Lit, Neg, Slice, Tuple, call, num
from gradgen.ir import TensorType
from gradgen.ops import P, Param, ShapeError, op

FULL = ("slice", None, None, None)
NEW = ("new",)
ELLIPSIS = ("...",)


# --------------------------------------------------------------------------------------------------
# bounds as dims: text, proofs, resolution against a shape


def dim_text(d: Dim) -> str:
    """A bound as the spec writes it: ``D - K``, ``-1``, ``2*H``, ``-D - 1`` (the dim printer's order)."""
    return str(d)


def parts(d: Dim) -> tuple[Dim, Dim]:
    """d = pos - neg, both with positive coefficients."""
    return Dim(tuple(t for t in d.terms if t[1] > 0)), _neg(Dim(tuple(t for t in d.terms if t[1] < 0)))


def index_text(items) -> str:
    """The index as the spec would write it: ``[:, 0:H]``, ``[..., None, -1]``."""
    out = []
    for it in items:
        if it[0] == "new":
            out.append("None")
        elif it[0] == "...":
            out.append("...")
        elif it[0] == "int":
            out.append(dim_text(it[1]))
        else:
            _, lo, hi, step = it
            text = ("" if lo is None else dim_text(lo)) + ":" + ("" if hi is None else dim_text(hi))
            out.append(text if step is None else f"{text}:{step}")
    return "[" + ", ".join(out) + "]"


def nonneg(d: Dim) -> bool:
    """``d >= 0`` for every size of its dims (sizes may be 0 at run time): no negative coefficient."""
    return all(c >= 0 for _, c in d.terms)


def _neg(d: Dim) -> Dim:
    return Dim.const(-1) * d


class Needs:
    """What an index needs of the sizes: each ``lo <= hi`` is proven now, refused now when it never
    holds, or else kept for the generated module to check at run time (``gradgen/runtime.py``)."""

    def __init__(self, s, items):
        self.s = s
        self.items = items
        self.run_time: list[tuple[Dim, Dim]] = []

    def require(self, lo: Dim, hi: Dim, what: str) -> None:
        d = hi + _neg(lo)
        if nonneg(d):
            return
        if nonneg(_neg(d) + Dim.const(-1)):  # lo > hi for every size
            self.s.fail(
                f"the index {index_text(self.items)} of {self.s.where(0)} is out of range: {what} needs "
                f"{dim_text(lo)} <= {dim_text(hi)}, which never holds"
            )
        if (lo, hi) not in self.run_time:
            self.run_time.append((lo, hi))


def _position(needs: Needs, bound: Dim, size: Dim, axis: int, what: str, last: Dim) -> Dim:
    """A bound as a position from the start of the axis, within ``0 .. last``."""
    if nonneg(_neg(bound)) and bound.terms:
        pos = size + bound  # negative: counted from the end, so it must not be 0 (-K with K = 0)
        needs.require(bound, Dim.const(-1), f"the {what} {dim_text(bound)} (counted from the end)")
    else:  # counted from the start (D - K: K <= D is checked below, never read as from the end)
        pos = bound
    where = f"the {what} {dim_text(bound)} of axis {axis} (size {size})"
    needs.require(Dim.const(0), pos, where)
    needs.require(pos, last, where)
    return pos


def _ceil_div(s, span: Dim, step: int, axis: int) -> Dim:
    const = sum(c for m, c in span.terms if not m)
    rest = [(m, c) for m, c in span.terms if m]
    if any(c % step for _, c in rest):
        s.fail(
            f"the slice of axis {axis} with step {step} has {dim_text(span)} elements before the step, "
            f"so its length is not a dim the spec can name; make that a multiple of {step}"
        )
    return Dim(tuple((m, c // step) for m, c in rest)) + Dim.const(-(-const // step))


def _slice_len(needs: Needs, item, size: Dim, axis: int) -> Dim:
    _, lo, hi, step = item
    start = Dim.const(0) if lo is None else _position(needs, lo, size, axis, "start", size)
    stop = size if hi is None else _position(needs, hi, size, axis, "stop", size)
    needs.require(start, stop, f"the slice {index_text((item,))[1:-1]} of axis {axis} (size {size})")
    span = stop + _neg(start)
    return span if not step or step == 1 else _ceil_div(needs.s, span, step, axis)


def expand_items(s, items, rank: int) -> tuple:
    """The items with the ellipsis (or the implicit trailing ``:``) spelled out as whole axes."""
    real = sum(1 for it in items if it[0] in ("int", "slice"))
    if real > rank:
        s.fail(f"too many indices: {index_text(items)} indexes {real} axes, but {s.where(0)} has rank {rank}")
    fill = (FULL,) * (rank - real)
    if ELLIPSIS in items:
        k = items.index(ELLIPSIS)
        return items[:k] + fill + items[k + 1 :]
    return tuple(items) + fill


def index_shape(s, items, shape, needs: Needs | None = None) -> tuple[Dim, ...]:
    needs = needs or Needs(s, items)
    out = []
    axis = 0
    for it in expand_items(s, items, len(shape)):
        if it == NEW:
            out.append(Dim.const(1))
            continue
        size = shape[axis]
        if it[0] == "int":
            _position(needs, it[1], size, axis, "index", size + Dim.const(-1))
        elif it == FULL:
            out.append(size)
        else:
            out.append(_slice_len(needs, it, size, axis))
        axis += 1
    return tuple(out)


def run_time_needs(s, items, shape) -> list[tuple[Dim, Dim]]:
    """The ``lo <= hi`` conditions on sizes that the generated module checks for this index."""
    needs = Needs(s, items)
    index_shape(s, items, shape, needs)
    return needs.run_time


# --------------------------------------------------------------------------------------------------
# emission


def bound_expr(ctx, d: Dim) -> E:
    """A bound as code: ``-1``, ``K``, ``-K``, ``2 * H``, ``D - 1``, over the dim variables."""
    if d.is_const:
        return Lit(str(d.value))
    pos, negs = parts(d)
    if not pos.terms:
        return Neg(ctx.dim(negs))
    return ctx.dim(pos) if not negs.terms else Bin("-", ctx.dim(pos), ctx.dim(negs))


def index_exprs(ctx, items) -> tuple[E, ...]:
    out = []
    for it in items:
        if it == NEW:
            out.append(Lit("None"))
        elif it == ELLIPSIS:
            out.append(Lit("..."))
        elif it[0] == "int":
            out.append(bound_expr(ctx, it[1]))
        else:
            _, lo, hi, step = it
            lo_e = None if lo is None or lo == Dim.const(0) else bound_expr(ctx, lo)
            hi_e = None if hi is None else bound_expr(ctx, hi)
            out.append(Slice(lo_e, hi_e, None if step in (None, 1) else Lit(str(step))))
    return tuple(out)


def _batched_items(items) -> tuple:
    return (FULL,) + tuple(items)


# --------------------------------------------------------------------------------------------------
# the rows


@op(
    "index",
    (P("a"), Param("index", "index", required=True)),
    rule="index rule: g written into zeros at the indexed positions",
    jvp_rule="index JVP rule: the tangent indexed alike",
    callable=False,
    linear=True,
    fresh=False,
    bool_args=(0,),  # a slice of a mask is a mask (never differentiated)
    shift=(1,),
    zeros="all",
    derivation="""
y = a[index] with constant ints and slices (and None, ...) picks each element of a at most once, so
the cotangent of a is g at the picked positions and 0 elsewhere: da = zeros_like(a); da[index] = g
(an int drops its axis in y and in the assignment alike; None adds an axis of size 1 on both sides).
A basic index is a view, so the forward copies nothing.  Exact.""",
)
class IndexOp:
    @staticmethod
    def shape(s):
        t = s.types[0]
        return TensorType(index_shape(s, s.attr("index"), t.shape), t.dtype)

    @staticmethod
    def forward(f):
        return Index(f.a(0), index_exprs(f, f.attr("index")), False)

    @staticmethod
    def pullback(r):
        return (r.op("unindex", r.g, index=r.attr("index"), shape=r.t(0).shape),)

    batch = staticmethod(lambda r: r.node_like(r.batched[0], index=_batched_items(r.attr("index"))))


@op(
    "unindex",
    (P("a"), Param("index", "index"), Param("shape", "dims")),
    rule="index rule: g written into zeros at the indexed positions",
    internal=True,
    fresh=True,
    linear=True,
    derivation="""
y = zeros of the given shape with y[index] = a: the transpose of an index (each position is written at
most once, so no sums).  Its own pullback indexes the cotangent alike.""",
)
class Unindex:
    shape = staticmethod(lambda s: TensorType(tuple(s.attr("shape")), "float"))

    @staticmethod
    def forward(f):
        f.stmt(f.var, call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
        f.stmt(f.var, f.a(0), op="=", index=index_exprs(f, f.attr("index")))
        return None

    pullback = staticmethod(lambda r: (r.op("index", r.g, index=r.attr("index")),))
    batch = staticmethod(
        lambda r: r.node_like(
            r.batched[0],
            index=_batched_items(r.attr("index")),
            shape=(r.size_dim,) + tuple(r.attr("shape")),
        )
    )


def _stack_axis(s, rank: int) -> int:
    ax = s.attr("axis")
    if not -(rank + 1) <= ax <= rank:
        s.fail(
            f"axis {ax} is out of range for stack of operands of rank {rank} (allowed: {-rank - 1} .. {rank})"
        )
    return ax % (rank + 1)


def _pick(ax: int, k: int) -> tuple:
    return (FULL,) * ax + (("int", Dim.const(k)),)


@op(
    "stack",
    (P("tensors", "tensors"), Param("axis", "int", 0)),
    rule="stack rule: each operand's slice of g",
    jvp_rule="stack JVP rule: the tangents stacked",
    zeros="all",
    derivation="""
y = stack((a_0, ..., a_{n-1}), axis) puts the operands side by side along a new axis, so operand k's
cotangent is g at position k of that axis: da_k = g[(:,) * axis + (k,)], a view.  Exact.""",
)
class Stack:
    @staticmethod
    def shape(s):
        ts = s.types
        first = ts[0].shape
        for i, t in enumerate(ts):
            if t.shape != first:
                s.fail(
                    f"stack needs operands of one shape: {s.where(0)} has {shape_str(first)}, "
                    f"{s.where(i)} has {shape_str(t.shape)}"
                )
        ax = _stack_axis(s, len(first))
        return TensorType(first[:ax] + (Dim.const(len(ts)),) + first[ax:], "float")

    @staticmethod
    def forward(f):
        n = len(f.types)
        ax = _stack_axis(f, f.t(0).rank)
        return call("np.stack", Tuple(tuple(f.a(i) for i in range(n))), axis=num(ax))

    @staticmethod
    def jvp(r):
        if all(t is None for t in r.tangents):
            return None
        ts = [r.zeros(r.t(i).shape) if t is None else t for i, t in enumerate(r.tangents)]
        return r.op("stack", *ts, axis=r.attr("axis"))

    @staticmethod
    def pullback(r):
        ax = _stack_axis(r, r.t(0).rank)
        return tuple(r.op("index", r.g, index=_pick(ax, i)) for i in range(len(r.types)))

    @staticmethod
    def batch(r):
        ax = _stack_axis(r, r.t(0).rank)
        parts = [
            x if x is not None else r.broadcast(r.x(i), (r.size_dim,) + r.t(i).shape)
            for i, x in enumerate(r.batched)
        ]
        return r.op("stack", *parts, axis=ax + 1)


def split_items(s, shape) -> tuple:
    """The index of one piece of ``split(a, sections, axis)``: a slice along the axis."""
    sections, piece = s.attr("sections"), s.attr("piece")
    rank = len(shape)
    ax = s.attr("axis")
    if rank == 0 or not -rank <= ax < rank:
        s.fail(f"axis {ax} of split is out of range for {s.where(0)}, which has rank {rank}")
    ax %= rank
    size = shape[ax]
    if isinstance(sections, int):
        part = Dim(tuple((m, c // sections) for m, c in size.terms))
        if any(c % sections for _, c in size.terms):
            s.fail(
                f"split into {sections} equal pieces needs axis {ax} of {s.where(0)} (size {size}) to be "
                f"a multiple of {sections} that the spec proves; give the sizes instead, as a list"
            )
        sizes = (part,) * sections
    else:
        sizes = sections
        for d in sizes:  # (one that may be negative, D - 1, is checked when the module runs)
            if nonneg(_neg(d) + Dim.const(-1)):
                s.fail(f"a size of split must not be negative, and {dim_text(d)} is")
        total = Dim.const(0)
        for d in sizes:
            total = total + d
        if total != size:
            s.fail(
                f"the sizes of split add up to {total}, but axis {ax} of {s.where(0)} has size {size}; "
                "they are the pieces' sizes (as torch.split), not split points (as numpy.split)"
            )
    start = Dim.const(0)
    for d in sizes[:piece]:
        start = start + d
    stop = start + sizes[piece]
    return (FULL,) * ax + (("slice", start, None if stop == size else stop, None),)


def _split_index(ctx) -> tuple:
    return split_items(ctx, ctx.t(0).shape)


class _Checked:
    """A node whose shape rule held, as split_items reads it (for the run-time checks)."""

    def __init__(self, node):
        self.attr = node.attr

    def fail(self, message):  # pragma: no cover (shapes were checked)
        raise AssertionError(message)


def node_items(node, shape) -> tuple:
    """The index an ``index`` or ``split`` node reads its operand with."""
    return node.attr("index") if node.op == "index" else split_items(_Checked(node), shape)


@op(
    "split",
    (P("a"), Param("sections", "sections", required=True), Param("axis", "int", 0)),  # (and the piece, 0 ..)
    rule="split rule: g written into zeros at the piece's slice",
    jvp_rule="split JVP rule: the tangent's piece",
    callable=False,
    linear=True,
    fresh=False,
    shift=(1,),
    zeros="all",
    derivation="""
One piece of split(a, sections, axis) is the slice a[..., start:stop] along the axis (sections: a count
of equal pieces or the pieces' sizes), so, as for an index, its cotangent is g at that slice and 0
elsewhere; the pieces' cotangents add up to the cotangent of a (notes section 3).  Exact.""",
)
class SplitPiece:
    @staticmethod
    def shape(s):
        t = s.types[0]
        if s.attr("piece") == 0:
            return TensorType(index_shape(s, split_items(s, t.shape), t.shape), t.dtype)
        try:  # the same check fails for every piece: piece 0 reports it, once
            return TensorType(index_shape(s, split_items(s, t.shape), t.shape), t.dtype)
        except ShapeError:
            return t

    forward = staticmethod(lambda f: Index(f.a(0), index_exprs(f, _split_index(f)), False))

    pullback = staticmethod(lambda r: (r.op("unindex", r.g, index=_split_index(r), shape=r.t(0).shape),))
    batch = staticmethod(lambda r: r.node_like(r.batched[0], axis=r.attr("axis") % r.t(0).rank + 1))
