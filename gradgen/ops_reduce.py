"""The op rows of issue 9's reductions and gathers: ``max`` and ``min`` (and the internal ``tie_share``
their derivatives are built from), ``take_along_axis`` (and its transpose, the internal
``scatter_along``).

A max (or min) over axes picks, in each reduced slice, the largest (smallest) entry.  Where several
entries of a slice tie for it, the value does not say which one was picked, so the derivative is a
convention: this module follows torch's ``amax``/``amin`` and splits the slice's cotangent evenly among
the tied entries.  Registered by one import at the end of ``gradgen/ops.py``.
"""

from __future__ import annotations

import textwrap

from gradgen.dims import Dim, numel, shape_str
from gradgen.expr import Bin, E, Index, Lit, Tuple, call, method, num, sub
from gradgen.ir import Domain, TensorType
from gradgen.ops import (
    ROWS,
    TWO,
    P,
    Param,
    _reduce_batch,
    _reduce_kwargs,
    _reduce_shape,
    _unproven,
    kw_axis,
    norm_axes,
    op,
    reduced,
)

# --------------------------------------------------------------------------------------------------
# max and min over axes


def _extreme_derivation(name: str, word: str) -> str:
    return _wrapped(f"""
y = the {word} entry of each reduced slice of a.  Off ties y moves with exactly one entry, the one that
is the {word}: dy = da at that entry, so da = g there and 0 elsewhere.  At a tie of k entries y is not
differentiable (moving one tied entry {"up" if name == "max" else "down"} moves y, moving it the other
way does not); the rule takes the convention of torch's amax/amin: each tied entry gets g / k, so the
shares still add up to g (moving all k together moves y by as much), and the gradient is the average of
the k choices "all of g to tied entry j".  Computed as ties = (a == the slice's {word} entry), found again from a, and
da = ties * (g / the count of ties in the slice).
Accuracy: the forward is exact; the split divides g by a small int, one rounding.  A nan in a slice
makes y nan and gives the slice a nan gradient.""")


def _wrapped(text: str) -> str:
    """One paragraph at the width of the other derivations (the op's words change the line lengths)."""
    return textwrap.fill(" ".join(text.split()), 104)


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
        Domain("indices", types[0].shape[attr("axis") % types[0].rank]) if k == 1 else None
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


# --------------------------------------------------------------------------------------------------
# var and std over axes, with NumPy's ddof


def _spread_count(t: TensorType, axes) -> Dim:
    count = Dim.const(1)
    for i in axes:
        count = count * t.shape[i]
    return count


def _dof(b, t: TensorType, axes) -> E:
    """n - ddof as emitted: the count of entries per slice less NumPy's delta degrees of freedom."""
    n = b.dim(_spread_count(t, axes))
    ddof = b.attr("ddof")
    return Bin("-", n, num(ddof)) if ddof else n


def _centered(b, t: TensorType, axes) -> E:
    """a minus its mean over the axes, found again from a (two passes, as NumPy's var)."""
    kw = _reduce_kwargs(b, axes, t.rank, True)
    return b.temp("centered", sub(b.x(0), method(b.x(0), "mean", **kw)), t.shape)


def _var_shape(s):
    ddof = s.attr("ddof")
    if ddof < 0:
        s.fail(f"ddof of {s.node.op} must be >= 0, not {ddof}")
    out = _reduce_shape(s)
    t = s.types[0]
    count = _spread_count(t, norm_axes(s, s.attr("axis"), t.rank))
    if count.is_const and count.value <= ddof:
        s.fail(
            f"{s.node.op} with ddof={ddof} needs more than {ddof} entries per slice, but {s.where(0)} "
            f"(shape {shape_str(t.shape)}) has {count.value} along the reduced axes"
        )
    return out


def _var_forward(name):
    def forward(f):
        t = f.t(0)
        axes = norm_axes(f, f.attr("axis"), t.rank)
        kw = _reduce_kwargs(f, axes, t.rank, f.attr("keepdims"))
        if f.attr("ddof"):
            kw["ddof"] = num(f.attr("ddof"))
        return method(f.a(0), name, **kw)

    return staticmethod(forward)


VAR_PARAMS = (P("a"), Param("axis", "axis"), Param("keepdims", "bool", False), Param("ddof", "int", 0))


def _graph_centered(r, axes):
    return r.sub(r.x(0), r.op("mean", r.x(0), axis=axes[0] if len(axes) == 1 else axes, keepdims=True))


def _var_pullback(r, g, axes):
    """The cotangent of a for a cotangent g of var(a): 2 (a - mean) g / (n - ddof), g re-expanded."""
    t = r.t(0)
    g = g if r.attr("keepdims") else r.expand(g, axes)
    dof = r.size(_spread_count(t, axes) + Dim.const(-r.attr("ddof")))
    return r.mul(_graph_centered(r, axes), r.div(r.mul(TWO, g), dof))


def _var_jvp(r, axes):
    """d var = sum(2 (a - mean) da) / (n - ddof): the mean's own change drops out (the centered values
    sum to 0)."""
    t = r.t(0)
    dof = r.size(_spread_count(t, axes) + Dim.const(-r.attr("ddof")))
    total = r.sum(r.mul(_graph_centered(r, axes), r.tangents[0]), axes, r.attr("keepdims"))
    return r.div(r.mul(TWO, total), dof)


@op(
    "var",
    VAR_PARAMS,
    rule="var rule: 2 (a - mean) g / (n - ddof)",
    jvp_rule="var JVP rule: 2 sum((a - mean) da) / (n - ddof)",
    derivation="""
y = sum((a - m)^2) / (n - ddof) over the axes, m the mean and n the count (NumPy's var, two passes).
dy = 2 sum((a - m)(da - dm)) / (n - ddof), and sum(a - m) = 0 removes dm, so da = 2 (a - m) g /
(n - ddof), g broadcast back; m is found again from a in backward.  Accuracy: two-pass, a few ulps times
the condition of the data (no cancellation from large means, unlike mean(a^2) - mean(a)^2).  A slice of
at most ddof entries is a ValueError at run time (NumPy would give inf or nan).""",
)
class Var_:
    shape = staticmethod(_var_shape)
    forward = _var_forward("var")

    @staticmethod
    def jvp(r):
        return _var_jvp(r, norm_axes(r, r.attr("axis"), r.t(0).rank))

    @staticmethod
    def pullback(r):
        return (_var_pullback(r, r.g, norm_axes(r, r.attr("axis"), r.t(0).rank)),)

    batch = staticmethod(_reduce_batch)


@op(
    "std",
    VAR_PARAMS,
    rule="std rule: (a - mean) g / ((n - ddof) y)",
    jvp_rule="std JVP rule: d var / (2 y)",
    derivation="""
y = sqrt(var(a, ddof)): dy = d var / (2 y), so da = (a - m) g / ((n - ddof) y) with var's rule.  Where
y = 0 (every entry of the slice equal) the standard deviation is not differentiable (like |x| at 0);
the rule takes 0 there, the smallest choice (torch gives nan).  Accuracy: as var, then one square root
and one division.""",
)
class Std:
    shape = staticmethod(_var_shape)
    forward = _var_forward("std")

    @staticmethod
    def jvp(r):
        axes = norm_axes(r, r.attr("axis"), r.t(0).rank)
        return r.mul(_var_jvp(r, axes), r.op("half_reciprocal", r.y))

    @staticmethod
    def pullback(r):
        axes = norm_axes(r, r.attr("axis"), r.t(0).rank)
        return (_var_pullback(r, r.mul(r.g, r.op("half_reciprocal", r.y)), axes),)

    batch = staticmethod(_reduce_batch)


def _over_nonzero(g: E, d: E, y: E) -> E:
    """g / d where y != 0, else 0 (std's rule at a slice of equal entries)."""
    zeros = call("np.zeros_like", y)
    return call("np.divide", g, d, out=zeros, where=Bin("!=", y, num(0)))


@op(
    "half_reciprocal",
    (P("a"),),
    rule="std rule, 1 / (2 y) (0 where y = 0)",
    elementwise=True,
    internal=True,
    fresh=True,
    derivation="""
h = 1 / (2 a) where a != 0, else 0: the derivative of sqrt at its output a, with std's choice at 0.
dh = -2 h^2 da.""",
)
class HalfReciprocal:
    shape = staticmethod(lambda s: TensorType(s.types[0].shape, "float"))

    @staticmethod
    def forward(f):
        y = f.a(0)
        return _over_nonzero(num(0.5), y, y)

    partials = staticmethod(lambda r: (r.neg(r.mul(TWO, r.mul(r.y, r.y))),))


# --------------------------------------------------------------------------------------------------
# argmax and argmin: int tensors, never differentiated


def _arg_shape(s):
    t = s.types[0]
    axis = s.attr("axis")
    if axis is None:  # numpy: the index into the flattened array
        return TensorType((Dim.const(1),) * t.rank if s.attr("keepdims") else (), "int")
    ax = norm_axes(s, axis, t.rank)
    return TensorType(reduced(t.shape, ax, s.attr("keepdims")), "int")


def _arg(name: str, word: str):
    @op(
        name,
        (P("a"), Param("axis", "axis", allow_tuple=False), Param("keepdims", "bool", False)),
        rule=f"{name}: the index of the {word} entry",
        fresh=True,
        derivation=f"""
y = the index of the {word} entry along the axis (the first one at a tie, as numpy.{name}; with axis=None
the index into the flattened array): an int tensor, piecewise constant in a, so no gradient flows
through it.  It may index (take, take_along_axis, the labels of softmax_cross_entropy) an axis of the
size it ranges over.  Exact.""",
    )
    class Arg:
        shape = staticmethod(_arg_shape)

        @staticmethod
        def forward(f):
            t = f.t(0)
            kw = {}
            if f.attr("axis") is not None:
                kw["axis"] = kw_axis(norm_axes(f, f.attr("axis"), t.rank), t.rank)
            if f.attr("keepdims"):
                kw["keepdims"] = Lit("True")
            return method(f.a(0), name, **kw)

        jvp = staticmethod(lambda r: None)
        pullback = staticmethod(lambda r: (None,))

        @staticmethod
        def batch(r):
            axis = r.attr("axis")
            if axis is None:
                r.fail(f"{name} with axis=None cannot be batched; give it an axis")
            return r.node_like(r.batched[0], axis=norm_axes(r, axis, r.t(0).rank)[0] + 1)

    return Arg


_arg("argmax", "largest")
_arg("argmin", "smallest")


def index_bound(graph, types, nid: int) -> Dim | None:
    """The exclusive upper bound of the values of an int tensor that an op computed (argmax over K
    entries: K), or None for an input (checked at run time instead)."""
    n = graph.nodes[nid]
    if n.op not in ("argmax", "argmin"):
        return None
    t = types[n.args[0]]
    axis = n.attr("axis")
    return numel(t.shape) if axis is None else t.shape[axis % t.rank]


# the size of the axis that each op's int operand indexes
INDEXED_SIZE = {
    "take": lambda t, attr: t.shape[attr("axis", 0) % t.rank],
    "take_along_axis": lambda t, attr: t.shape[attr("axis") % t.rank],
    "softmax_cross_entropy": lambda t, attr: t.shape[-1],
}


def check_computed_indices(s, types) -> None:
    """Indices computed by an op (argmax) are in range by construction when the axis they index has the
    size they range over; anything else is refused at build time (there is no input to check).  An op
    whose int operands are values, not indices (a comparison, argmax(z) == y), has nothing to check."""
    if s.node.op not in INDEXED_SIZE:
        return
    for k in ROWS[s.node.op].int_args:
        a = s.node.args[k]
        if not isinstance(a, int) or s.types[k].dtype != "int" or s.graph.nodes[a].op == "input":
            continue
        bound = index_bound(s.graph, types, a)
        size = INDEXED_SIZE[s.node.op](s.types[0], s.attr) if s.node.op in INDEXED_SIZE else None
        if bound is None or size is None or bound != size:
            s.fail(
                f"{s.where(k)} ranges over {bound} entries, but indexes an axis of {size} in "
                f"{s.node.op}: computed indices must range over the axis they index"
            )
