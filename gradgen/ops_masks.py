"""Masks: comparisons that give bool tensors, ``&``, ``|`` and ``~`` on them, and ``where``.

A mask is a bool tensor: a comparison of float tensors (or of a tensor and a number), a ``bool`` input
(``{shape: [T, T], dtype: bool}``), or masks combined with ``&``, ``|`` and ``~``.  Masks are piecewise
constant in everything they are computed from, so they are never differentiated: no cotangent flows
into a mask or into a comparison's operands, and their tangents are zero.  A mask selects values only
through ``where(cond, a, b)``; in arithmetic it is an error at its place (``gradgen/shapes.py``), whose
hint says to use ``where``.

The four ordering comparisons also serve the derivative layer (the masks of relu, abs, maximum and
minimum), as they did when they were internal ops.
"""

from __future__ import annotations

from gradgen.expr import Bin, Invert, call, method
from gradgen.ir import Const, Domain, TensorType
from gradgen.ops import P, _Binary, broadcast_shapes, op

ZERO = Const(0, "0")


def _kind(s, i) -> str:
    """What operand i is, for messages: 'x, a float tensor', 'the number 0'."""
    t = s.t(i)
    if t is None:
        return s.where(i)
    kind = {"bool": "a mask (bool)", "int": "an int tensor"}.get(t.dtype, "a float tensor")
    return f"{s.where(i)}, {kind}"


def _numbers_or_floats(s, symbol: str) -> None:
    """The operands of a comparison: float tensors or numbers, or int tensors (labels, argmax) with
    int tensors or numbers; at least one tensor."""
    for i, t in enumerate(s.types):
        if t is not None and t.dtype == "bool":
            s.fail(
                f"{symbol} compares numbers, but {_kind(s, i)}; combine masks with & (and), | (or) "
                "and ~ (not)"
            )
    if all(t is None for t in s.types):
        s.fail(f"{symbol} needs a tensor operand; both sides are numbers")
    dtypes = [t.dtype for t in s.types if t is not None]
    if "int" in dtypes and "float" in dtypes:
        i = next(k for k, t in enumerate(s.types) if t is not None and t.dtype == "int")
        s.fail(
            f"{symbol} compares {_kind(s, i)} with {_kind(s, 1 - i)}; compare int tensors (labels, "
            f"argmax) with int tensors or numbers (y == 0, argmax(z, axis=-1) == y)"
        )


def _compare(name, symbol, words):
    @op(
        name,
        (P("a", "operand"), P("b", "operand")),
        rule=f"mask a {symbol} b",
        elementwise=True,
        int_args=(0, 1),  # int tensors compare with int tensors or numbers (y == 0)
        # an int input that is only compared is drawn over a few values, each comparison seeing both
        domain=lambda k, attr, types: (
            Domain("labels") if types[k] is not None and types[k].dtype == "int" else None
        ),
        callable=False,
        hint="mask",
        fresh=True,
        derivation=f"""
y = (a {symbol} b) elementwise, a bool mask ({words}); NumPy broadcasting.  y is piecewise constant in
a and b, so its derivatives are zero wherever they exist: no cotangent reaches a or b through it and
its tangent is zero (a mask is never differentiated).  Exact.""",
    )
    class C(_Binary):
        @staticmethod
        def shape(s):
            _numbers_or_floats(s, symbol)
            return TensorType(_Binary.shape(s).shape, "bool")

        forward = staticmethod(lambda f: Bin(symbol, f.a(0), f.a(1)))
        jvp = staticmethod(lambda r: None)
        pullback = staticmethod(lambda r: (None, None))

    return C


_compare("greater", ">", "a greater than b")
_compare("greater_equal", ">=", "a greater than or equal to b")
_compare("less", "<", "a less than b")
_compare("less_equal", "<=", "a less than or equal to b")
_compare("equal", "==", "a equal to b")
_compare("not_equal", "!=", "a not equal to b")

# the spec's comparison operators, as ast spells them, to the op rows above
COMPARISONS = {"Gt": "greater", "GtE": "greater_equal", "Lt": "less", "LtE": "less_equal"}
COMPARISONS |= {"Eq": "equal", "NotEq": "not_equal"}
# ops whose shape rules say themselves what is wrong with a mask operand (the generic message of
# gradgen/shapes.py, "use where", would be the wrong advice for them)
EXPLAINS_MASKS = (*COMPARISONS.values(), "where")
SYMBOL = {
    "greater": ">",
    "greater_equal": ">=",
    "less": "<",
    "less_equal": "<=",
    "equal": "==",
    "not_equal": "!=",
    "logical_and": "&",
    "logical_or": "|",
    "logical_not": "~",
}


def _masks_only(s, symbol: str) -> None:
    for i, t in enumerate(s.types):
        if t is None or t.dtype != "bool":
            s.fail(
                f"{symbol} works on masks (bool tensors), but {_kind(s, i)}; make a mask with a "
                "comparison first, and mind that & and | bind tighter than comparisons: write "
                "(a > 0) & (b < 1)"
            )


def _logical(name, symbol, words):
    @op(
        name,
        (P("a"), P("b")),
        rule=f"mask a {symbol} b",
        elementwise=True,
        callable=False,
        bool_args=(0, 1),
        hint="mask",
        fresh=True,
        derivation=f"y = a {symbol} b elementwise on masks ({words}); NumPy broadcasting.  A mask: never "
        "differentiated.  Exact.",
    )
    class L(_Binary):
        @staticmethod
        def shape(s):
            _masks_only(s, symbol)
            return TensorType(_Binary.shape(s).shape, "bool")

        forward = staticmethod(lambda f: Bin(symbol, f.a(0), f.a(1)))
        jvp = staticmethod(lambda r: None)
        pullback = staticmethod(lambda r: (None, None))

    return L


_logical("logical_and", "&", "true where both are")
_logical("logical_or", "|", "true where either is")


@op(
    "logical_not",
    (P("a"),),
    rule="mask ~a",
    elementwise=True,
    callable=False,
    bool_args=(0,),
    hint="mask",
    fresh=True,
    derivation="y = ~a, true where the mask a is false.  A mask: never differentiated.  Exact.",
)
class LogicalNot:
    @staticmethod
    def shape(s):
        _masks_only(s, "~")
        return TensorType(s.t(0).shape, "bool")

    forward = staticmethod(lambda f: Invert(f.a(0)))
    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: (None,))


# --------------------------------------------------------------------------------------------------
# where: the one way a mask meets numbers


def _select(r, cond, a, b):
    """where(cond, a, b) as a node, None (a zero) when both a and b are zeros."""
    if a is None and b is None:
        return None
    return r.op("where", cond, ZERO if a is None else a, ZERO if b is None else b)


@op(
    "where",
    (P("cond"), P("a", "operand"), P("b", "operand")),
    rule="where rule: the cotangent goes to the side picked",
    jvp_rule="where JVP rule: the tangent of the side picked",
    broadcast_rule="where rule: the cotangent goes to the side picked, broadcast reduced (notes section 6)",
    elementwise=True,
    bool_args=(0,),
    fresh=True,
    zeros="all",  # of its float operands a and b
    derivation="""
y = a where cond, b elsewhere (np.where, NumPy broadcasting over all three).  cond is a mask, constant,
so dy = [cond] da + [~cond] db: a receives g where cond holds and 0 elsewhere, b the rest (each summed
over its broadcast axes, notes section 6), and cond receives nothing.  With two numbers
(where(mask, 1.0, 0.0), the mask as numbers, to count or average over it) y is a constant of the graph
in the computation's dtype (.astype of the first float input's dtype).  A mask computed in the graph
gives np.where(cond, g, 0): a selected 0 is exactly 0 even where g is inf or nan, and the mask's buffer
is never reused for a float result.  A mask that is an input (never written) gives g * cond, in g's
buffer when it is dead: measured 3-4x faster than np.where at [8, 8, 128, 128] float32 with a [128, 128]
mask, the same numbers wherever g is finite.  A number operand (where(mask, scores, -1e9), the causal
attention fill) gets no cotangent; a following softmax gives a -1e9 entry an exact 0 weight unless its
whole row is masked (then the row's weights are uniform, as with torch's masked_fill).  Exact.""",
)
class Where:
    @staticmethod
    def shape(s):
        cond = s.t(0)
        if cond.dtype != "bool":
            s.fail(
                f"the condition of where must be a mask (bool), but it is {_kind(s, 0)}; write a "
                "comparison (where(x > 0, x, 0.0)) or pass a bool input"
            )
        for i in (1, 2):
            t = s.t(i)
            if t is not None and t.dtype == "bool":
                s.fail(
                    f"where selects numbers, but {_kind(s, i)}; combine masks with & (and), | (or) "
                    "and ~ (not)"
                )
        shapes = [t.shape if t is not None else () for t in s.types]
        return TensorType(broadcast_shapes(s, shapes), "float")

    @staticmethod
    def forward(f):
        picked = call("np.where", f.a(0), f.a(1), f.a(2))
        if f.t(1) is None and f.t(2) is None:  # two numbers: a mask as numbers of the dtype
            return method(picked, "astype", f.dtype())
        return picked

    @staticmethod
    def jvp(r):
        _, ta, tb = r.tangents
        return _select(r, r.x(0), ta, tb)

    @staticmethod
    def pullback(r):
        cond = r.x(0)
        if r.b.nodes[cond].op == "input":
            # a caller's mask is never written: g * mask, in g's buffer when it is dead
            da = None if isinstance(r.x(1), Const) else r.mul(r.g, cond)
            db = None if isinstance(r.x(2), Const) else r.mul(r.g, r.op("logical_not", cond))
            return (None, da, db)
        da = None if isinstance(r.x(1), Const) else _select(r, cond, r.g, None)
        db = None if isinstance(r.x(2), Const) else _select(r, cond, None, r.g)
        return (None, da, db)
