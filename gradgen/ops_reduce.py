"""The op rows of issue 9's reductions and gathers: ``max`` and ``min`` (and the internal ``tie_share``
their derivatives are built from), ``take_along_axis`` (and its transpose, the internal
``scatter_along``).

A max (or min) over axes picks, in each reduced slice, the largest (smallest) entry.  Where several
entries of a slice tie for it, the value does not say which one was picked, so the derivative is a
convention: this module follows torch's ``amax``/``amin`` and splits the slice's cotangent evenly among
the tied entries.  Registered by one import at the end of ``gradgen/ops.py``.
"""

from __future__ import annotations

from gradgen.dims import shape_str
from gradgen.expr import Bin, Index, Lit, Tuple, call, div, method, mul, num
from gradgen.ir import TensorType
from gradgen.ops import (
    P,
    Param,
    _reduce_batch,
    _reduce_kwargs,
    _reduce_shape,
    _unproven,
    expand,
    norm_axes,
    op,
)

# --------------------------------------------------------------------------------------------------
# max and min over axes


def _extreme_derivation(name: str, word: str) -> str:
    return f"""
y = the {word} entry of each reduced slice of a.  Off ties y moves with exactly one entry, the one that
is the {word}: dy = da at that entry, so da = g there and 0 elsewhere.  At a tie of k entries y is not
differentiable (moving one tied entry {"up" if name == "max" else "down"} moves y, moving it the other
way does not); the rule takes the convention of torch's amax/amin: each tied entry gets g / k, so the
shares still add up to g (moving all k together moves y by as much), and the gradient is the average of
the k choices "all of g to tied entry j".  Computed as ties = (a == the slice's {word} entry), found again from a, and
da = ties * (g / the count of ties in the slice).
Accuracy: the forward is exact; the split divides g by a small int, one rounding.  A nan in a slice
makes y nan and gives the slice a nan gradient."""


def _extreme(name: str, word: str):
    @op(
        name,
        (P("a"), Param("axis", "axis"), Param("keepdims", "bool", False)),
        rule=f"{name} rule: the cotangent to the {word} entry, split evenly among ties",
        jvp_rule=f"{name} JVP rule: the tangent at the {word} entry, averaged over ties",
        zeros="all",
        derivation=_extreme_derivation(name, word),
    )
    class Extreme:
        shape = staticmethod(_reduce_shape)

        @staticmethod
        def forward(f):
            t = f.t(0)
            axes = norm_axes(f, f.attr("axis"), t.rank)
            return method(f.a(0), name, **_reduce_kwargs(f, axes, t.rank, f.attr("keepdims")))

        @staticmethod
        def vjp(b):
            t = b.t(0)
            axes = norm_axes(b, b.attr("axis"), t.rank)
            if not axes:  # the max of a scalar is the scalar
                return (b.g,)
            full = len(axes) == t.rank and not b.attr("keepdims")  # g is a scalar: it broadcasts
            g = b.g if full else expand(b, b.g, axes, t.rank, b.attr("keepdims"))
            # the extremes found again from a, not read from y: a cache whose y was rounded apart
            # from a (or a y that is not a's at all) still gives each slice at least one tie
            again = method(b.x(0), name, **_reduce_kwargs(b, axes, t.rank, True))
            ties = b.temp("ties", Bin("==", b.x(0), again), t.shape)  # a mask: never reused in place
            count = method(ties, "sum", **_reduce_kwargs(b, axes, t.rank, True), dtype=b.dtype())
            return (mul(ties, div(g, count)),)  # count in the dtype: g / count keeps a float32 g

        @staticmethod
        def jvp(r):
            axes, share = _share(r)
            return r.sum(r.mul(r.tangents[0], share), axes, r.attr("keepdims"))

        @staticmethod
        def pullback(r):
            axes, share = _share(r)
            g = r.g if r.attr("keepdims") else r.expand(r.g, axes)
            return (r.mul(g, share),)

        batch = staticmethod(_reduce_batch)

    return Extreme


def _share(r):
    """Each entry's share of its slice's derivative: 1 / k at the k tied extremes, 0 elsewhere."""
    t = r.t(0)
    axes = norm_axes(r, r.attr("axis"), t.rank)
    axis = axes[0] if len(axes) == 1 else axes
    return axes, r.op("tie_share", r.x(0), axis=axis, extreme=r.node.op)


_extreme("max", "largest")
_extreme("min", "smallest")


@op(
    "tie_share",
    (P("a"), Param("axis", "axis"), Param("extreme", "choice", "max", choices=("max", "min"))),
    rule="the share of each tied extreme",
    internal=True,
    fresh=True,
    derivation="""
s = [a == m] / (the count of such entries in a's slice), m the slice's max (or min) along the axes: 1 / k
at each of the k tied extremes, 0 elsewhere, in a's shape.  Piecewise constant, so its derivatives are
zero.""",
)
class TieShare:
    @staticmethod
    def shape(s):
        a = s.types[0]
        norm_axes(s, s.attr("axis"), a.rank)
        return TensorType(a.shape, "float")

    @staticmethod
    def forward(f):
        t = f.t(0)
        axes = norm_axes(f, f.attr("axis"), t.rank)
        kw = _reduce_kwargs(f, axes, t.rank, True)
        m = method(f.a(0), f.attr("extreme"), **kw)
        f.stmt(f.var, method(Bin("==", f.a(0), m), "astype", f.dtype()))
        f.stmt(f.var, method(f.var, "sum", **kw), op="/=")
        return None

    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: (None,))

    @staticmethod
    def batch(r):
        axes = tuple(k + 1 for k in norm_axes(r, r.attr("axis"), r.t(0).rank))
        return r.node_like(r.batched[0], axis=axes[0] if len(axes) == 1 else axes)


# --------------------------------------------------------------------------------------------------
# take_along_axis: one pick per position along an axis (the per-row label pick), and its scatter


def _along_shape(s, a: TensorType, idx: TensorType, ax: int) -> tuple:
    """numpy.take_along_axis: indices of a's rank; off the axis the two broadcast, along it the indices
    give the length."""
    if idx.rank != a.rank:
        s.fail(
            f"take_along_axis needs indices of the tensor's rank: the tensor ({s.where(0)}) has shape "
            f"{shape_str(a.shape)}, the indices ({s.where(1)}) have {shape_str(idx.shape)}; give the indices "
            f"a size-1 axis (e.g. [N, 1] to pick one entry per row)"
        )
    out = []
    for k, (da, di) in enumerate(zip(a.shape, idx.shape)):
        if k == ax or da == di or da.is_one() or di.is_one():
            out.append(di if k == ax or da.is_one() else da)
            continue
        s.fail(
            f"take_along_axis along axis {ax}: dim {k} differs, {da} ({s.where(0)}, shape "
            f"{shape_str(a.shape)}) vs {di} ({s.where(1)}, shape {shape_str(idx.shape)}); off the axis the "
            f"indices' dims must be the tensor's or 1{_unproven(da, di)}"
        )
    return tuple(out)


def _one_per_slot(a_shape, idx_shape, out_shape, ax: int) -> bool:
    """Every position of a is picked at most once: one index per slice along the axis, and a not
    broadcast (so the scatter may assign instead of adding up repeats)."""
    return idx_shape[ax].is_one() and all(a_shape[k] == out_shape[k] for k in range(len(a_shape)) if k != ax)


def _scatter_along(f, target, idx, g, a_shape, idx_shape, out_shape, ax: int) -> None:
    """Statements adding g into target (zeros shaped like a) at the positions the indices picked."""
    if _one_per_slot(a_shape, idx_shape, out_shape, ax):
        f.stmt(None, call("np.put_along_axis", target, idx, g, axis=num(ax)))
        return
    rank = len(a_shape)
    index = []
    for k in range(rank):
        if k == ax:
            index.append(idx)
            continue
        where = tuple(Lit(":") if j == k else Lit("None") for j in range(rank))
        index.append(Index(call("np.arange", f.dim(a_shape[k])), where, True))
    f.stmt(None, call("np.add.at", target, Tuple(tuple(index)), g))


@op(
    "take_along_axis",
    (P("a"), P("indices"), Param("axis", "int", required=True, allow_none=False)),
    rule="take_along_axis rule: scatter-add",
    jvp_rule="take_along_axis JVP rule: the tangent's entries taken",
    int_args=(1,),
    linear=True,
    zeros="all",  # of its float operand a
    domain=lambda k, attr, types: (
        f"indices:{types[0].shape[attr('axis') % types[0].rank]}" if k == 1 else None
    ),
    derivation="""
y[..., j, ...] = a[..., indices[..., j, ...], ...] along the axis (numpy.take_along_axis): y copies
entries of a, so each entry of a receives the sum of the cotangents of the positions that copied it: g
scatter-added into zeros shaped like a.  With one index per slice (indices of size 1 along the axis, as
in the per-row label pick a[np.arange(N), y]) and a not broadcast, no entry is picked twice and the
scatter is a plain assignment (np.put_along_axis); otherwise repeats add up (np.add.at).  Exact, but
for the one rounding per repeat in the scatter.""",
)
class TakeAlongAxis:
    @staticmethod
    def shape(s):
        a, idx = s.types
        if idx.dtype != "int":
            s.fail(f"take_along_axis needs int indices, but {s.where(1)} is a float tensor")
        if a.rank == 0:
            s.fail(f"take_along_axis needs a tensor of rank >= 1, but {s.where(0)} is a scalar")
        ax = norm_axes(s, s.attr("axis"), a.rank)[0]
        return TensorType(_along_shape(s, a, idx, ax), "float")

    @staticmethod
    def forward(f):
        ax = norm_axes(f, f.attr("axis"), f.t(0).rank)[0]
        return call("np.take_along_axis", f.a(0), f.a(1), axis=num(ax))

    @staticmethod
    def vjp(b):
        ta, ti = b.t(0), b.t(1)
        ax = norm_axes(b, b.attr("axis"), ta.rank)[0]
        da = b.temp("scatter", call("np.zeros", b.shape_tuple(ta.shape), dtype=b.dtype()), ta.shape)
        _scatter_along(b, da, b.x(1), b.g, ta.shape, ti.shape, b.out.shape, ax)
        return (da, None)

    @staticmethod
    def pullback(r):
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)[0]
        g = r.broadcast(r.g, r.out.shape) if r.is_number(r.g) else r.g
        return (r.op("scatter_along", g, r.x(1), axis=ax, shape=r.t(0).shape), None)

    @staticmethod
    def batch(r):
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)[0]
        idx = r.op("expand_dims", r.x(1), axis=(0,))  # a leading 1: the same picks for every batch entry
        return r.op("take_along_axis", r.batched[0], idx, axis=ax + 1)


@op(
    "scatter_along",
    (P("a"), P("indices"), Param("axis", "int"), Param("shape", "dims")),
    rule="take_along_axis rule: scatter-add",
    int_args=(1,),
    internal=True,
    fresh=True,
    linear=True,
    derivation="""
y = zeros of the given shape, with each entry of a added at the position its index names along the axis
(repeats add up): the transpose of take_along_axis.""",
)
class ScatterAlong:
    @staticmethod
    def shape(s):
        return TensorType(tuple(s.attr("shape")), "float")

    @staticmethod
    def forward(f):
        ax, shape = f.attr("axis"), tuple(f.attr("shape"))
        f.stmt(f.var, call("np.zeros", f.shape_tuple(shape), dtype=f.dtype()))
        _scatter_along(f, f.var, f.a(1), f.a(0), shape, f.t(1).shape, f.t(0).shape, ax)
        return None

    pullback = staticmethod(lambda r: (r.op("take_along_axis", r.g, r.x(1), axis=r.attr("axis")), None))

    @staticmethod
    def batch(r):
        idx = r.op("expand_dims", r.x(1), axis=(0,))
        shape = (r.size_dim,) + tuple(r.attr("shape"))
        return r.op("scatter_along", r.batched[0], idx, axis=r.attr("axis") + 1, shape=shape)
