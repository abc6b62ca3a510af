"""The op rows of the extreme-value reductions: ``max`` and ``min`` (and the internal ``tie_share`` their
derivatives are built from).

A max (or min) over axes picks, in each reduced slice, the largest (smallest) entry.  Where several
entries of a slice tie for it, the value does not say which one was picked, so the derivative is a
convention: this module follows torch's ``amax``/``amin`` and splits the slice's cotangent evenly among
the tied entries.  Registered by one import at the end of ``gradgen/ops.py``.
"""

from __future__ import annotations

from gradgen.expr import Bin, div, method, mul
from gradgen.ir import TensorType
from gradgen.ops import (
    P,
    Param,
    _reduce_batch,
    _reduce_kwargs,
    _reduce_shape,
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
