"""The op table: every op's signature, shape rule, forward code and VJP, with its derivation.

One row per op.  A VJP receives the cotangent ``g`` of the op's output (dL/dy for the final scalar L,
shaped like y) and returns one cotangent per tensor operand, shaped like that operand, or None where no
gradient is wanted.  For ops marked ``elementwise`` the rule returns cotangents in the *output's* shape
and the planner reduces them over the broadcast axes once, at build time (notes section 6): no rule
repeats that logic.  Notation in derivations: ``dL = <g, dy>`` and we read off each operand's term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gradgen.dims import Dim, numel, shape_str
from gradgen.expr import (
    Attr,
    Bin,
    E,
    Index,
    Lit,
    Slice,
    Tuple,
    Var,
    add,
    axis_lit,
    call,
    div,
    method,
    mul,
    neg,
    num,
    sub,
)
from gradgen.ir import POSITIVE, PROBS, Const, Domain, TensorType, perm_of


class ShapeError(Exception):
    """A shape rule's complaint; the driver attaches the node's place."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # tensor | tensors | axis | axes | int | bool | choice | str | shape
    default: object = None
    required: bool = False
    allow_none: bool = True
    allow_tuple: bool = True
    choices: tuple = ()


def P(name, kind="tensor", default=None, **kw):
    return Param(
        name,
        kind,
        default,
        required=(
            kind in ("tensor", "tensors", "shape", "str", "operand")
            and "default" not in kw
            and default is None
        ),
        **kw,
    )


@dataclass(frozen=True)
class OpDef:
    """One row of the op table: everything gradgen knows about an op.

    ``forward`` emits NumPy for the op (through ``plan.FwdCtx``), in ``forward`` and in every derivative
    program.  The graph-level rules build derivative programs as new nodes (``gradgen/derive.py``), are
    pure, and return None for a zero; ``backward`` and ``value_and_grad`` are made from the reverse rule
    like every other derivative, so an op has exactly one:

    - ``jvp(r)``: the output's tangent from the operands' tangents ``r.tangents`` (forward mode);
    - ``pullback(r)``: one cotangent per operand from the output's cotangent ``r.g`` (reverse mode;
      elementwise ops return them in the output's shape, the sweep sums broadcast axes once);
    - ``batch(r)``: the op applied to operands with a leading batch axis (``r.batched``).

    An elementwise op may give ``partials(r)`` instead of ``jvp`` and ``pullback``: one factor per
    operand, d y = sum_i partial_i * d a_i; an op marked ``linear`` (linear in operand 0, the other
    operands constant) gets its tangent by applying itself to the tangent.
    """

    name: str
    params: tuple[Param, ...]
    shape: Callable
    forward: Callable
    rule: str  # what the generated backward line says it applies
    derivation: str  # the differential identity and its source
    elementwise: bool = False
    callable: bool = True
    varargs: bool = False
    int_args: tuple[int, ...] = ()  # operand positions that may (or must) be int tensors
    broadcast_rule: str = ""  # what the line says when an operand was broadcast
    jvp: Callable | None = None
    pullback: Callable | None = None
    batch: Callable | None = None
    partials: Callable | None = None
    linear: bool = False
    jvp_rule: str = ""  # what a forward-mode line says it applies
    fresh: bool | None = None  # forward returns a new array (True), a view of operand 0 (False), or
    # None: as the emitted expression says (a call not known to copy counts as a view)
    number_operands: bool = False  # forward takes Python numbers as its operands
    hint: str = ""  # in derivative programs, a value of this op is named <operand 0>_<hint>
    internal: bool = False  # built by derivative rules only; never written in a spec
    bool_args: tuple[int, ...] = ()  # operand positions that may (or must) be masks (bool tensors)
    helpers: tuple[str, ...] | Callable = ()  # module-level functions its code calls (gradgen/special.py:
    # _erf), or (attr) -> those functions when they depend on the attributes

    # What the generated tests need to know (read by gradgen.testplan; defaults are the cautious choice):
    domain: Callable | None = None  # (k, attr, types) -> how the test draws operand k if it is an input
    zeros: str | Callable | None = None  # y is exactly 0 when "all" / "any" / the "first" operand is 0
    shift: tuple[int, ...] = ()  # y moves by +-da for each operand (add, sub, neg, transpose, reshape)
    kink: tuple[int, ...] = ()  # at a kink (operands all 0), the side whose derivative the rule takes
    magnitude: str = "grows"  # "bounded": |y| bounded for any a; "explodes": overflows for moderate a


TABLE: dict[str, OpDef] = {}  # the ops a spec may use
ROWS: dict[str, OpDef] = {}  # those and the internal ops that derivative programs are built from


def op(
    name,
    params=(),
    *,
    rule,
    derivation,
    elementwise=False,
    callable=True,
    varargs=False,
    int_args=(),
    broadcast_rule="",
    **facts,
):
    """Register an op; ``facts`` are the other OpDef fields: what the generated tests read (domain ...
    magnitude) and what the derivative layer reads (jvp ... internal).  The graph-level rules may also be
    given as the class's staticmethods (jvp, pullback, batch, partials)."""

    def register(cls):
        for key in ("jvp", "pullback", "batch", "partials"):
            if key not in facts and getattr(cls, key, None) is not None:
                facts[key] = getattr(cls, key)
        if facts.get("internal"):
            facts["callable"] = False
        ROWS[name] = OpDef(
            name,
            tuple(params),
            cls.shape,
            cls.forward,
            rule,
            derivation.strip(),
            elementwise,
            facts.pop("callable", callable),
            varargs,
            int_args,
            broadcast_rule,
            **facts,
        )
        if not ROWS[name].internal:
            TABLE[name] = ROWS[name]
        return cls

    return register


# --------------------------------------------------------------------------------------------------
# shape helpers


def broadcast_shapes(s, shapes: list[tuple[Dim, ...] | None]) -> tuple[Dim, ...]:
    """NumPy broadcasting decided on symbolic dims: equal dims, or one of them the literal 1."""
    shapes_ = [sh for sh in shapes if sh is not None]
    rank = max((len(sh) for sh in shapes_), default=0)
    out = []
    for k in range(rank, 0, -1):
        dim, who = None, None
        for i, sh in enumerate(shapes):
            if sh is None or len(sh) < k:
                continue
            d = sh[-k]
            if dim is None or dim.is_one():
                dim, who = d, i
            elif d.is_one() or d == dim:
                continue
            else:
                s.fail(
                    f"dims do not broadcast: {dim} ({s.where(who)}) vs {d} ({s.where(i)}), "
                    f"in shapes {shape_str(shapes[who])} and {shape_str(sh)}{_unproven(dim, d)}"
                )
        out.append(dim)
    return tuple(out)


def _unproven(a: Dim, b: Dim) -> str:
    """Why two dims that may be equal at run time still differ in the spec."""
    if a.is_const != b.is_const:
        return "; a literal dim is never assumed equal to a symbolic one, so use the same dim in both shapes"
    return ""


def norm_axes(s, axis, rank: int, who: int = 0) -> tuple[int, ...]:
    """Axes as sorted non-negative ints; None means all."""
    if axis is None:
        return tuple(range(rank))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        if not -rank <= a < rank:
            s.fail(
                f"axis {a} is out of range for {s.where(who)}, which has rank {rank} (shape {shape_str(s.types[who].shape)})"
            )
        out.append(a % rank)
    if len(set(out)) != len(out):
        s.fail(f"axis {axis} repeats an axis")
    return tuple(sorted(out))


def reduced(shape, axes, keepdims):
    if keepdims:
        return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def kw_axis(axes: tuple[int, ...], rank: int) -> Lit:
    """The axis argument as emitted: None-equivalent full reductions are left to the caller."""
    if len(axes) == 1 and axes[0] == rank - 1:
        return Lit("-1")
    return axis_lit(axes)


# --------------------------------------------------------------------------------------------------
# helpers of the graph-level rules (``r`` is a ``derive.Rule``: the node, its operands, the builder)

ONE = Const(1, "1")
TWO = Const(2, "2")


@dataclass(frozen=True)
class Over:
    """A partial derivative 1 / x, applied as a division (t / x reads better and rounds once)."""

    x: object


def _reduce_batch(r):
    """A reduction (sum, mean, logsumexp) of a batched operand: the same axes, one further right."""
    t = r.t(0)
    axes = norm_axes(r, r.attr("axis"), t.rank)
    shifted = tuple(a + 1 for a in axes)
    return r.node_like(r.batched[0], axis=shifted[0] if len(shifted) == 1 else shifted)


def _axis_batch(r):
    """An op with one int axis (softmax, log_softmax, concatenate, take) on a batched operand."""
    ax = norm_axes(r, r.attr("axis"), r.t(0).rank)[0]
    return r.node_like(r.batched[0], axis=ax + 1)


# --------------------------------------------------------------------------------------------------
# elementwise arithmetic (notes section 6 and 7 when an operand is broadcast)


class _Binary:
    @staticmethod
    def shape(s):
        return TensorType(broadcast_shapes(s, [t.shape if t else () for t in s.types]), "float")


@op(
    "add",
    (P("a"), P("b")),
    rule="sum rule",
    broadcast_rule="broadcast sum rule, notes section 6",
    elementwise=True,
    callable=False,
    shift=(1, 1),
    derivation="""
d(a + b) = da + db, so both operands receive g.  A broadcast operand was added to every slice along
the broadcast axes, so its cotangent is g summed over those axes (notes section 6: dy = 1^T dB).
Accuracy: one rounding per element; where a and -b nearly cancel, the result keeps only what the
operands' own rounding left (the sum's conditioning, not the formula's).""",
)
class Add(_Binary):
    forward = staticmethod(lambda f: add(f.a(0), f.a(1)))
    partials = staticmethod(lambda r: (ONE, ONE))
    batch = staticmethod(lambda r: _basis_added(r))


@op(
    "sub",
    (P("a"), P("b")),
    rule="difference rule",
    broadcast_rule="broadcast sum rule, notes section 6",
    elementwise=True,
    callable=False,
    shift=(1, -1),
    derivation="""
d(a - b) = da - db: a receives g, b receives -g (summed over broadcast axes, notes section 6).
Accuracy: as for +, one rounding; the cancellation of nearly equal operands is the difference's own.""",
)
class Sub(_Binary):
    forward = staticmethod(lambda f: sub(f.a(0), f.a(1)))
    partials = staticmethod(lambda r: (ONE, Const(-1, "-1")))


@op(
    "mul",
    (P("a"), P("b")),
    rule="product rule",
    broadcast_rule="broadcast product rule, notes section 7",
    elementwise=True,
    callable=False,
    zeros="any",
    derivation="""
d(a * b) = da * b + a * db (Hadamard), so a receives g * b and b receives g * a.  For a broadcast
row y in B = y * X, dy = sum_i dB_i * X_i and dX = y * dB (notes section 7).
Accuracy: one rounding per product; it overflows or underflows only where the exact product does.""",
)
class Mul(_Binary):
    forward = staticmethod(lambda f: mul(f.a(0), f.a(1)))

    @staticmethod
    def jvp(r):
        ta, tb = r.tangents
        if r.x(0) == r.x(1):  # d(a a) = 2 a da
            return r.mul(ta, r.mul(TWO, r.x(0)))
        return r.add(r.mul(ta, r.x(1)), r.mul(r.x(0), tb))

    @staticmethod
    def pullback(r):
        if r.x(0) == r.x(1):
            return (r.mul(r.g, r.mul(TWO, r.x(0))), None)
        return (r.mul(r.g, r.x(1)), r.mul(r.g, r.x(0)))

    # a basis times a factor stays a (scaled) basis; else the elementwise rule (None)
    batch = staticmethod(lambda r: _scaled(r, lambda s, f, i: r.mul(s, f)) or _factors_first(r))


@op(
    "div",
    (P("a"), P("b")),
    rule="quotient rule",
    broadcast_rule="quotient rule, broadcast reduced (notes section 6)",
    elementwise=True,
    callable=False,
    zeros="first",
    domain=lambda k, attr, types: POSITIVE if k == 1 else None,
    derivation="""
d(a / b) = da / b - (a / b^2) db = da / b - y db / b with y = a / b reused from the forward pass,
so a receives g / b and b receives -g * y / b.  Accuracy: a few ulps wherever y is a normal number;
-g * y / b overflows only where a / b^2 itself does; b = 0 gives inf or nan, as the quotient does.""",
)
class Div(_Binary):
    forward = staticmethod(lambda f: div(f.a(0), f.a(1)))

    @staticmethod
    def jvp(r):
        ta, tb = r.tangents
        return r.sub(r.div(ta, r.x(1)), r.div(r.mul(tb, r.y), r.x(1)))

    @staticmethod
    def pullback(r):
        return (r.div(r.g, r.x(1)), r.neg(r.div(r.mul(r.g, r.y), r.x(1))))

    batch = staticmethod(lambda r: _scaled(r, lambda s, f, i: r.div(s, f) if i == 0 else None))


# --------------------------------------------------------------------------------------------------
# elementwise unary ops


class _Unary:
    @staticmethod
    def shape(s):
        return TensorType(s.types[0].shape, "float")


@op(
    "neg",
    (P("a"),),
    rule="negation rule",
    elementwise=True,
    callable=False,
    derivation="d(-a) = -da.  Exact.",
    shift=(-1,),
)
class Neg_(_Unary):
    forward = staticmethod(lambda f: neg(f.a(0)))
    partials = staticmethod(lambda r: (Const(-1, "-1"),))
    batch = staticmethod(lambda r: _scaled(r, lambda s, f, i: r.neg(s)))


def _scaled(r, combine):
    """A batch of basis vectors through an elementwise op with an unbatched factor: a scaled basis
    (``gradgen/ops_basis.py``), or None for the general elementwise batching rule."""
    from gradgen.ops_basis import scale_batch

    return scale_batch(r, combine)


def _basis_added(r):
    """A scaled basis added to a full batched value: its diagonal added in place (``ops_basis``), or
    None for the general elementwise rule."""
    from gradgen.ops_basis import add_batch

    return add_batch(r)


def _factors_first(r):
    """y * (t * z) with t batched and y, z not: t * (y * z), the unbatched factors multiplied first, so
    that one product runs over the batch instead of two (tanh's second-order term dh * (h_dot * 2h)
    over a batch of tangents); None (the elementwise rule) for any other product."""
    xs = r.batched
    if sum(x is not None for x in xs) != 1:
        return None
    i = 0 if xs[0] is not None else 1
    inner = r.b.nodes[r.x(i)] if isinstance(r.x(i), int) else None
    if inner is None or inner.op != "mul" or inner.args[0] == inner.args[1]:
        return None
    parts = [r.batched_of(a) for a in inner.args]
    if sum(p is not None for p in parts) != 1:
        return None
    j = 0 if parts[0] is not None else 1
    small = r.mul(r.x(1 - i), inner.args[1 - j])
    return r.mul(r.pad(parts[j], r.out.rank), small)


def _basis_contract(r, subscripts: str, which: int):
    """A product of an unbatched operand with a batch of basis vectors, written as a copy onto a
    diagonal (``gradgen/ops_basis.py``), or None when the batched operand is not a basis."""
    from gradgen.ops_basis import contract_batch

    return contract_batch(r, subscripts, which)


@op(
    "pow",
    (P("a"), Param("k", "int")),
    rule="power rule",
    elementwise=True,
    callable=False,
    derivation="""
d(a ** k) = k * a ** (k - 1) da for a literal k.  Accuracy: NumPy's power, a few ulps; for k < 1 the
derivative is infinite at a = 0 (inf, with a divide warning), and a < 0 with a fractional k is nan.""",
    zeros=lambda attr: "all" if attr("k") > 0 else None,
    domain=lambda k, attr, types: None if float(attr("k")).is_integer() else POSITIVE,
)
class Pow:
    shape = staticmethod(_Unary.shape)

    @staticmethod
    def forward(f):
        return Bin("**", f.a(0), num(f.attr("k")))

    @staticmethod
    def partials(r):
        k = r.attr("k")
        if k == 1:
            return (ONE,)
        if k == 2:
            return (r.mul(TWO, r.x(0)),)
        return (r.mul(Const(k, num(k).text), r.op("pow", r.x(0), k=k - 1)),)


def _unary(name, np_func, rule, derivation, partial, **facts):
    """An elementwise unary op; ``partial(r)`` is its derivative as a node (or ``Over(x)``: 1 / x),
    from which forward mode (t * partial) and the pullback (g * partial) follow."""

    class U(_Unary):
        forward = staticmethod(lambda f: call(np_func, f.a(0)))

    U.partials = staticmethod(lambda r: (partial(r),))
    return op(name, (P("a"),), rule=rule, elementwise=True, derivation=derivation, **facts)(U)


def _positive(k, attr, types):
    """domain fact of log and sqrt: the operand is drawn positive."""
    return POSITIVE


_unary(
    "exp",
    "np.exp",
    "exp rule, reusing the forward output",
    "d exp(a) = exp(a) da = y da: the forward output is reused.  Accuracy: a few ulps; inf above "
    "a = 88.7 (float32) and 709.8 (float64), where exp(a) is not a number of the dtype; log(1 + exp(a)) "
    "and log(sum(exp(a))) are rewritten to softplus and logsumexp (gradgen.rewrite), which never form it.",
    lambda r: r.y,
    magnitude="explodes",
)
_unary(
    "log",
    "np.log",
    "log rule",
    "d log(a) = da / a.  Accuracy: a few ulps for a > 0; -inf at 0, nan below.  A log of a value that "
    "may have rounded to 0 (sigmoid(z), 1 - sigmoid(z), 1 + exp(z), softmax(x), sum(exp(x))) is "
    "rewritten to the stable op it spells (gradgen.rewrite).",
    lambda r: Over(r.x(0)),
    domain=_positive,
)
_unary(
    "sqrt",
    "np.sqrt",
    "sqrt rule, reusing the forward output",
    "d sqrt(a) = da / (2 sqrt(a)) = da / (2 y).  Accuracy: a few ulps for a >= 0; at a = 0 the "
    "derivative is infinite, so da is inf there (nan where g is 0): keep a away from 0, as "
    "sqrt(var + 1e-5) does in specs/layernorm.yaml.",
    lambda r: Over(r.mul(TWO, r.y)),
    domain=_positive,
)
_unary(
    "tanh",
    "np.tanh",
    "tanh rule, reusing the forward output",
    "d tanh(a) = (1 - tanh(a)^2) da = (1 - y * y) da.  Accuracy: y within an ulp; 1 - y * y has an "
    "absolute error of about one ulp of 1, so the derivative's relative error grows like eps e^(2|a|) "
    "(up to 1e-3 at |a| = 5 in float32) and it is 0 from |a| = 10 (float32) and 19 (float64), where "
    "the true 4 e^(-2|a|) is still about 1e-8 and 1e-16.  The exact 4 t / (1 + t)^2, t = exp(-2|a|), measured 2x "
    "tanh's forward plus backward at [1024, 1024], for gradients below one ulp of 1: not used.",
    lambda r: r.sub(ONE, r.mul(r.y, r.y)),
    zeros="all",
    magnitude="bounded",
)
_unary(
    "square",
    "np.square",
    "square rule",
    "d a^2 = 2 a da.  Accuracy: one rounding; inf where a^2 exceeds the dtype (|a| > 1.8e19 in float32).",
    lambda r: r.mul(TWO, r.x(0)),
    zeros="all",
)
_unary(
    "abs",
    "np.abs",
    "abs rule (abs'(0) = 0)",
    "d |a| = sign(a) da, with sign(0) = 0 as SPEC.md fixes.  Exact.",
    lambda r: r.op("sign", r.x(0)),
    zeros="all",
    kink=(0,),  # abs'(0) = 0, the mean of the slopes -1 and +1
)


def _exp_neg_abs(f) -> Var:
    """exp(-|a|), in (0, 1] for every a: it never overflows (a forward temporary named ``tail``)."""
    shape = f.t(0).shape
    magnitude = f.temp("abs", call("np.abs", f.a(0)), shape)
    negated = f.temp("neg", neg(magnitude), shape)  # (separate steps: one buffer, updated in place)
    return f.temp("tail", call("np.exp", negated), shape)


@op(
    "sigmoid",
    (P("a"),),
    rule="sigmoid rule, from the smaller tail",
    elementwise=True,
    magnitude="bounded",
    derivation="""
s(a) = 1 / (1 + exp(-a)).  With t = s(-|a|) = exp(-|a|) / (1 + exp(-|a|)), the smaller of s(a) and
1 - s(a), in (0, 1/2]: y = t where a < 0 and 1 - t where a >= 0, computed as |[a >= 0] - t|.
exp(-|a|) never overflows, and t keeps its relative precision however small it gets, so y is within a
few ulps over the whole range in float32 and float64 (nonzero down to a = -103 and -745, where
s(a) underflows), with no overflow warning.  The old 0.5 + 0.5 tanh(a / 2) rounded to 0 below
a = -20 (float32) and -38 (float64).  ds(a) = s(a) (1 - s(a)) da = t (1 - t) da: the same product
taken from the tail, so it stays accurate where 1 - y would round to 0 (a > 17 in float32).
Measured at [1024, 1024] on one thread (float32 / float64 forward): the tanh form 0.69 / 2.6 ms, this
form 1.34 / 3.3 ms, np.where(a >= 0, 1 - t, t) 5.0 / 10.6 ms, exp(-logaddexp(0, -a)) 16.6 / 18.7 ms;
the backward t (1 - t) costs what y (1 - y) did.""",
)
class Sigmoid(_Unary):
    @staticmethod
    def forward(f):
        tail = _exp_neg_abs(f)
        f.stmt(tail, add(num(1), tail), op="/=")
        signed = f.temp("signed", sub(Bin(">=", f.a(0), num(0)), tail), f.t(0).shape)
        return call("np.abs", signed)

    # y (1 - y) = t (1 - t) with t = s(-|a|) the smaller tail
    partials = staticmethod(lambda r: (_tail_product(r, r.op("sigmoid_tail", r.x(0))),))


def _tail_product(r, tail):
    return r.mul(tail, r.sub(ONE, tail))


def _log1p_tail(f) -> Var:
    """log(1 + exp(-|a|)), in (0, log 2]: the part of softplus and log-sigmoid that needs care."""
    return f.temp("log1p", call("np.log1p", _exp_neg_abs(f)), f.t(0).shape)


@op(
    "log_sigmoid",
    (P("a"),),
    rule="log-sigmoid rule, reusing the forward output",
    elementwise=True,
    derivation="""
log s(a) = -log(1 + exp(-a)) = min(a, 0) - log1p(exp(-|a|)): no exp of a positive number, and the two
terms never cancel (both <= 0), so y is within a few ulps for every a in float32 and float64; it is
0 only where the true value is below the smallest subnormal (a > 103 in float32, > 745 in float64).
(-np.logaddexp(0, -a) is as exact but measured 10x slower at [1024, 1024].)  d log s(a) =
(1 - s(a)) da = s(-a) da, and s(-a) = 1 - exp(y) = -expm1(y): from the output, with expm1 exact where
y is near 0 (a large), so the derivative keeps its relative precision over the whole range.""",
)
class LogSigmoid(_Unary):
    @staticmethod
    def forward(f):
        soft = _log1p_tail(f)
        low = f.temp("min", call("np.minimum", f.a(0), num(0)), f.t(0).shape)
        return sub(low, soft)

    partials = staticmethod(lambda r: (r.neg(r.op("expm1", r.y)),))  # s(-a) = -expm1(y)


@op(
    "softplus",
    (P("a"),),
    rule="softplus rule, reusing the forward output",
    elementwise=True,
    derivation="""
softplus(a) = log(1 + exp(a)) = max(a, 0) + log1p(exp(-|a|)): no overflow, no cancellation (both terms
>= 0), within a few ulps for every a in float32 and float64 (0 only where the true value underflows,
a < -103 in float32, < -745 in float64).  d softplus(a) = s(a) da, and s(a) = 1 - exp(-y) =
-expm1(-y): from the output, exact to a few ulps over the whole range.""",
)
class Softplus(_Unary):
    @staticmethod
    def forward(f):
        soft = _log1p_tail(f)
        high = f.temp("max", call("np.maximum", f.a(0), num(0)), f.t(0).shape)
        return add(high, soft)

    partials = staticmethod(lambda r: (r.neg(r.op("expm1", r.neg(r.y))),))  # s(a) = -expm1(-y)


@op(
    "relu",
    (P("a"),),
    rule="relu rule (relu'(0) = 0)",
    elementwise=True,
    zeros="all",
    kink=(-1,),  # relu'(0) = 0, the slope from below
    derivation="""
relu(a) = max(a, 0); d relu(a) = [a > 0] da = [y > 0] da, with relu'(0) = 0 as SPEC.md fixes.
The mask multiply (in place when the cotangent's buffer is dead) measured 2-10x faster than np.where
or boolean-mask assignment on this project's 2-core machine, from [32, 128] to [1024, 1024].  Exact.""",
)
class Relu(_Unary):
    forward = staticmethod(lambda f: call("np.maximum", f.a(0), num(0)))
    partials = staticmethod(lambda r: (r.op("greater", r.y, Const(0, "0")),))


def _minmax(name, np_func, cmp_a, kink):
    @op(
        name,
        (P("a", "operand"), P("b", "operand")),
        rule=f"{name} rule (ties go to a)",
        elementwise=True,
        broadcast_rule=f"{name} rule (ties go to a), broadcast reduced (notes section 6)",
        zeros="all",
        kink=kink,  # a tie takes the slope of the side where a is picked
        derivation=f"""
{name}(a, b) picks one operand per element: d{name}(a, b) = [a {cmp_a} b] da + [not (a {cmp_a} b)] db;
at ties the gradient goes to a (SPEC.md).  Exact.""",
    )
    class M(_Binary):
        forward = staticmethod(lambda f: call(np_func, f.a(0), f.a(1)))

        @staticmethod
        def partials(r):
            a, b = r.x(0), r.x(1)
            opposite = {">=": "less", "<=": "greater"}[cmp_a]
            mask_a = None if isinstance(a, Const) else r.op(CMP_OP[cmp_a], a, b)
            mask_b = None if isinstance(b, Const) else r.op(opposite, a, b)
            return (mask_a, mask_b)

    return M


CMP_OP = {">": "greater", ">=": "greater_equal", "<": "less", "<=": "less_equal"}


_minmax("maximum", "np.maximum", ">=", kink=(1, -1))
_minmax("minimum", "np.minimum", "<=", kink=(-1, 1))


# --------------------------------------------------------------------------------------------------
# reductions


def _reduce_shape(s):
    t = s.types[0]
    axes = norm_axes(s, s.attr("axis"), t.rank)
    return TensorType(reduced(t.shape, axes, s.attr("keepdims")), "float")


def _reduce_kwargs(f, axes, rank, keepdims):
    kw = {}
    if len(axes) != rank:
        kw["axis"] = kw_axis(axes, rank)
    if keepdims:
        kw["keepdims"] = Lit("True")
    return kw


def _reduction_forward(f, name: str) -> E:
    """a.sum(...) or a.mean(...); a full sum or mean of squares as one dot product."""
    t = f.t(0)
    axes = norm_axes(f, f.attr("axis"), t.rank)
    squared = _sum_of_squares(f, axes)
    if squared is not None:
        return squared if name == "sum" else div(squared, f.dim(numel(t.shape)))
    if name == "sum":
        dotted = _sum_of_products(f, axes)
        if dotted is not None:
            return dotted
        inner = _inner_axis_sum(f, axes, t.rank)
        if inner is not None:
            return inner
    return method(f.a(0), name, **_reduce_kwargs(f, axes, t.rank, f.attr("keepdims")))


def _inner_axis_sum(f, axes, rank: int):
    """A sum over inner axes only (neither the first nor the last) of an array of rank 3 or more, as
    np.einsum: NumPy's a.sum(axis=1) of a [Z, N, C] batch runs its inner loop over C entries at a time
    and measured 4-8x slower than einsum's for C = 10 to 32 (a broadcast sum rule in a batch of tangents)."""
    if rank < 3 or f.attr("keepdims") or 0 in axes or rank - 1 in axes:
        return None
    letters = "abcdefghijklmnopqrstuvwxyz"[:rank]
    kept = "".join(c for i, c in enumerate(letters) if i not in axes)
    return call("np.einsum", Lit(repr(f"{letters}->{kept}")), f.a(0))


def _sum_of_products(f, axes) -> E | None:
    """sum(a * b) of two float arrays of one shape, when nothing else reads the products: over every
    axis one dot product (np.vdot), over the last axis one einsum (a row of dot products); no
    temporary the size of a."""
    t = f.t(0)
    inner = f.operand_node(0)
    if inner is None or inner.op != "mul" or not f.single_use(0) or t.rank == 0:
        return None
    a, b = inner.args
    if not (isinstance(a, int) and isinstance(b, int)):
        return None
    ta, tb = f.p.types[a], f.p.types[b]
    if ta.dtype != "float" or tb.dtype != "float":
        return None
    if len(axes) == t.rank and not f.attr("keepdims") and ta == t and tb == t:
        return call("np.vdot", f.value(a), f.value(b))
    # a row of dot products: einsum's ... broadcasts the leading axes as the product did
    rows_ok = ta.rank >= 1 and tb.rank >= 1 and ta.shape[-1] == tb.shape[-1] == t.shape[-1]
    if axes == (t.rank - 1,) and rows_ok and (ta == t or tb == t):
        rows = call("np.einsum", Lit("'...j,...j->...'"), f.value(a), f.value(b))
        return Index(rows, (Lit("..."), Lit("None")), False) if f.attr("keepdims") else rows
    return None


def _sum_of_squares(f, axes) -> E | None:
    """sum(square(a)) over every axis as one dot product, np.vdot(a, a), when nothing else reads the
    squares (their VJP reads a, not the squares): no temporary the size of a."""
    t = f.t(0)
    inner = f.operand_node(0)
    if len(axes) != t.rank or f.attr("keepdims") or t.rank == 0 or inner is None or not f.single_use(0):
        return None
    if inner.op == "square" or (inner.op == "pow" and inner.attr("k") == 2):
        a = f.value(inner.args[0])
        return call("np.vdot", a, a)
    return None


def _spread_back(r, g):
    """A reduction's cotangent re-expanded over the reduced axes and broadcast to the operand."""
    t = r.t(0)
    axes = norm_axes(r, r.attr("axis"), t.rank)
    if not r.attr("keepdims") and axes != tuple(range(len(axes))):
        g = r.expand(g, axes)  # (reduced leading axes need none: broadcasting aligns on the right)
    return r.broadcast(g, t.shape)


def _count(r) -> Dim:
    t = r.t(0)
    count = Dim.const(1)
    for i in norm_axes(r, r.attr("axis"), t.rank):
        count = count * t.shape[i]
    return count


@op(
    "sum",
    (P("a"), Param("axis", "axis"), Param("keepdims", "bool", False)),
    rule="sum rule: broadcast back",
    jvp_rule="sum JVP rule: the sum of the tangent",
    linear=True,
    zeros="all",
    derivation="""
y = sum over axes of a: every summed element enters y with weight 1, so da = g broadcast back over the
summed axes (the transpose of notes section 6's broadcast).  Accuracy: NumPy sums pairwise along the
contiguous axis (error about log2(n) eps times the sum of |a|) and in order along the others (about
n eps); a full sum of squares is one BLAS dot product (about n eps).""",
)
class Sum:
    shape = staticmethod(_reduce_shape)

    forward = staticmethod(lambda f: _reduction_forward(f, "sum"))

    pullback = staticmethod(lambda r: (_spread_back(r, r.g),))
    batch = staticmethod(_reduce_batch)


@op(
    "mean",
    (P("a"), Param("axis", "axis"), Param("keepdims", "bool", False)),
    rule="mean rule: broadcast back, divided by the count",
    jvp_rule="mean JVP rule: the mean of the tangent",
    linear=True,
    zeros="all",
    derivation="""
y = (1/n) sum over axes of a, n the number of elements averaged: da = g / n broadcast back.
Accuracy: as sum, then one division.  For a variance, mean(square(x - mean(x))) (two passes, as in
specs/layernorm.yaml) is accurate; mean(square(x)) - square(mean(x)) cancels to noise once the mean is
large against the spread.""",
)
class Mean:
    shape = staticmethod(_reduce_shape)

    forward = staticmethod(lambda f: _reduction_forward(f, "mean"))

    pullback = staticmethod(lambda r: (_spread_back(r, r.div(r.g, r.size(_count(r)))),))
    batch = staticmethod(_reduce_batch)


@op(
    "logsumexp",
    (P("a"), Param("axis", "axis", -1), Param("keepdims", "bool", False)),
    rule="logsumexp rule: softmax times the cotangent",
    derivation="""
y = log sum_c exp(a_c) is computed as m + log sum_c exp(a_c - m), m the max (stable);
dy = sum_c softmax(a)_c da_c, so da = g * exp(a - y) (notes section 2's softmax).  Accuracy: a few
ulps for any finite a, however large: the largest term is exp(0) = 1, so nothing overflows and the
log's argument lies in [1, n].  -inf entries (masks) are exact zeros of the sum; a reduced slice that is
all -inf, or holds +inf, gives nan (the shift is inf - inf).""",
)
class LogSumExp:
    shape = staticmethod(_reduce_shape)

    @staticmethod
    def forward(f):
        t = f.t(0)
        axes = norm_axes(f, f.attr("axis"), t.rank)
        kw = _reduce_kwargs(f, axes, t.rank, True)
        m = f.temp("max", method(f.a(0), "max", **kw), reduced(t.shape, axes, True))
        lse = f.temp(
            "lse",
            add(call("np.log", method(call("np.exp", sub(f.a(0), m)), "sum", **kw)), m),
            reduced(t.shape, axes, True),
        )
        if f.attr("keepdims"):
            return lse
        if len(axes) == t.rank:
            return Index(lse, tuple(Lit("0") for _ in axes), False) if t.rank else lse
        return call("np.squeeze", lse, axis=kw_axis(axes, t.rank))

    @staticmethod
    def _weights(r):
        """softmax(a) along the axes, exp(a - y) with y re-expanded: the derivative of logsumexp."""
        t = r.t(0)
        axes = norm_axes(r, r.attr("axis"), t.rank)
        y = r.y if r.attr("keepdims") else r.expand(r.y, axes)
        return r.op("exp", r.sub(r.x(0), y)), axes

    @staticmethod
    def jvp(r):
        w, axes = LogSumExp._weights(r)
        return r.sum(r.mul(r.tangents[0], w), axes, r.attr("keepdims"))

    @staticmethod
    def pullback(r):
        w, axes = LogSumExp._weights(r)
        g = r.g if r.attr("keepdims") else r.expand(r.g, axes)
        return (r.mul(g, w),)

    batch = staticmethod(_reduce_batch)


def _axis_shape(s):
    t = s.types[0]
    norm_axes(s, s.attr("axis"), t.rank)
    if t.rank == 0:
        s.fail(f"{s.node.op} needs at least one axis; {s.where(0)} is a scalar")
    return TensorType(t.shape, "float")


def _shifted(f):
    """y = a - max(a) along the axis, into the node's own variable (softmax, log_softmax)."""
    t = f.t(0)
    ax = kw_axis(norm_axes(f, f.attr("axis"), t.rank), t.rank)
    f.stmt(f.var, sub(f.a(0), method(f.a(0), "max", axis=ax, keepdims=Lit("True"))))
    return f.var, ax


@op(
    "softmax",
    (P("a"), Param("axis", "int", -1)),
    rule="softmax rule, reusing the forward output",
    hint="softmax",
    magnitude="bounded",
    derivation="""
y = exp(a - m) / sum exp(a - m) (m the max, for stability);
dy = y * (da - sum(y * da)), so da = y * (g - sum(g * y)) along the axis (notes section 2).
Accuracy: a few ulps per entry for finite a, however large; the sum is at least 1 (the largest entry's
exp(0)), so the division never meets an underflowed sum.  Entries more than 103 (float32) or 745
(float64) below their row's max are 0, which is their value to the dtype's precision; -inf entries are
exact 0s with 0 gradient; a row that is all -inf, or holds +inf, gives nan.""",
)
class Softmax:
    shape = staticmethod(_axis_shape)

    @staticmethod
    def forward(f):
        saved = f.saved_by("softmax_cross_entropy")
        if saved and norm_axes(f, f.attr("axis"), f.t(0).rank) == (f.t(0).rank - 1,):
            # the probabilities of a softmax cross-entropy of the same logits, computed before
            if "probs" in saved:
                return saved["probs"]
            return div(saved["exp"], saved["sums"])
        y, ax = _shifted(f)
        f.stmt(None, call("np.exp", y, out=y))
        # multiply by the reciprocal of the (smaller) sums rather than divide the whole tensor
        f.stmt(y, div(num(1), method(y, "sum", axis=ax, keepdims=Lit("True"))), op="*=")
        return None

    @staticmethod
    def _apply(r, v):
        """y * (v - sum(v * y)) along the axis: the Jacobian of softmax (symmetric) applied to v."""
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)
        return r.mul(r.y, r.sub(v, r.sum(r.mul(v, r.y), ax, keepdims=True)))

    jvp = staticmethod(lambda r: Softmax._apply(r, r.tangents[0]))
    pullback = staticmethod(lambda r: (Softmax._apply(r, r.g),))
    batch = staticmethod(_axis_batch)


@op(
    "log_softmax",
    (P("a"), Param("axis", "int", -1)),
    rule="log-softmax rule",
    hint="log_softmax",
    derivation="""
y = a - logsumexp(a); dy = da - sum(softmax(a) * da), so da = g - exp(y) * sum(g) along the axis.
Accuracy: a few ulps for finite a, however large: an entry far below the max is (a - m) - log(sum),
never the log of an underflowed 0 (log(softmax(x)) is rewritten to this op, gradgen.rewrite).  A -inf
entry gives -inf (its value); a row that is all -inf, or holds +inf, gives nan.""",
)
class LogSoftmax:
    shape = staticmethod(_axis_shape)

    @staticmethod
    def forward(f):
        saved = f.saved_by("softmax_cross_entropy")
        if saved and "log_probs" in saved and norm_axes(f, f.attr("axis"), f.t(0).rank) == (f.t(0).rank - 1,):
            return saved["log_probs"]
        y, ax = _shifted(f)
        f.stmt(y, call("np.log", method(call("np.exp", y), "sum", axis=ax, keepdims=Lit("True"))), op="-=")
        return None

    @staticmethod
    def jvp(r):
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)
        t = r.tangents[0]
        return r.sub(t, r.sum(r.mul(r.op("exp", r.y), t), ax, keepdims=True))

    @staticmethod
    def pullback(r):
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)
        return (r.sub(r.g, r.mul(r.op("exp", r.y), r.sum(r.g, ax, keepdims=True))),)

    batch = staticmethod(_axis_batch)


# --------------------------------------------------------------------------------------------------
# softmax cross-entropy, fused (notes section 2)


@op(
    "softmax_cross_entropy",
    (P("logits"), P("labels"), Param("reduction", "choice", "mean", choices=("mean", "sum"))),
    rule="softmax cross-entropy rule, notes section 2",
    int_args=(1,),
    domain=lambda k, attr, types: (
        None if k != 1 else Domain("labels", types[0].shape[-1]) if types[1].dtype == "int" else PROBS
    ),
    derivation="""
J = log sum_c exp(theta_c) - theta_k per row (notes section 2), so dJ/dtheta = softmax(theta) - onehot(k):
the fused form, never differentiated through log and softmax separately.  With int labels the one-hot
is never built: 1 is subtracted at each row's label.  With float labels (rows that sum to 1) it is
softmax(theta) - y, and dJ/dy = -log_softmax(theta).  "mean" divides by the number of rows N.
Accuracy: a few ulps for finite logits, however large (shifted by the row max, the log of a sum in
[1, C]).  With int labels a -inf logit is fine except at the label (loss inf, as it should be); with
float labels a -inf logit gives nan even where its label is 0 (0 * -inf): mask with a large negative
finite number instead.""",
)
class SoftmaxCrossEntropy:
    @staticmethod
    def shape(s):
        logits, labels = s.types
        if logits.rank not in (1, 2):
            s.fail(
                f"softmax_cross_entropy needs logits of shape [C] or [N, C], but {s.where(0)} has shape {shape_str(logits.shape)}"
            )
        if labels.dtype == "int":
            want = logits.shape[:-1]
            if labels.shape != want:
                s.fail(
                    f"int labels must have shape {shape_str(want)}, the shape {shape_str(logits.shape)} of the "
                    f"logits ({s.where(0)}) without the class axis, but {s.where(1)} has shape {shape_str(labels.shape)}"
                )
        elif labels.shape != logits.shape:
            s.fail(
                f"float labels must have the logits' shape {shape_str(logits.shape)} ({s.where(0)}), "
                f"but {s.where(1)} has shape {shape_str(labels.shape)}"
            )
        return TensorType((), "float")

    @staticmethod
    def forward(f):
        logits, labels = f.a(0), f.a(1)
        lt = f.t(0)
        batched = lt.rank == 2
        rowshape = lt.shape[:-1] + (Dim.const(1),) if batched else ()
        kw = dict(axis=Lit("-1"), keepdims=Lit("True")) if batched else {}
        # one [N, C] buffer: shifted logits, then their exponentials (written over the logits
        # themselves when nothing else reads them, by the planner's buffer pass); the row max is a
        # temporary of that one line
        e = f.temp("exp", sub(logits, method(logits, "max", **kw)), lt.shape)
        mean = f.attr("reduction") == "mean" and batched
        if f.t(1).dtype == "int":
            # the shifted logits at the labels, summed at once (no [N] array outlives this line)
            if batched:
                rows = call("np.arange", f.dim(lt.shape[0]))
                picked = f.temp("picked", method(Index(e, (rows, labels), True), "sum"), ())
            else:
                picked = f.temp("picked", Index(e, (labels,), True), ())
            f.stmt(None, call("np.exp", e, out=e))
            sums = f.temp("sums", method(e, "sum", **kw), rowshape)
            # J = sum over rows of log(sum_c exp(shifted_c)) - shifted_label: the log of the row sums only
            if batched:
                total = sub(method(call("np.log", sums), "sum"), picked)
            else:
                total = sub(call("np.log", sums), picked)
        else:
            exp_ = f.temp("probs", call("np.exp", e), lt.shape)
            sums = f.temp("sums", method(exp_, "sum", **kw), rowshape)
            f.stmt(exp_, sums, op="/=")
            # log-probabilities: shifted - log(sums); J = -sum(labels * log_probs)
            logp = f.temp("log_probs", sub(e, call("np.log", sums)), lt.shape)
            total = neg(method(mul(labels, logp), "sum"))
        return div(total, f.dim(lt.shape[0])) if mean else total

    # graph-level rules.  Int labels: dJ/dtheta = (softmax(theta) - onehot) / N, the one-hot never built
    # (label_add subtracts at the labels).  Float labels y, exactly for any y (rows need not sum to 1, so
    # that second derivatives w.r.t. y are right too): dJ/dtheta = (softmax(theta) * sum_c y_c - y) / N
    # and dJ/dy = -log_softmax(theta) / N.

    @staticmethod
    def _scale(r, g):
        lt = r.t(0)
        if r.attr("reduction") == "mean" and lt.rank == 2:
            return r.called(r.div(g, r.size(lt.shape[0])), "scale")
        return g

    @staticmethod
    def pullback(r):
        s = SoftmaxCrossEntropy._scale(r, r.g)
        logits, labels = r.x(0), r.x(1)
        p = r.op("softmax", logits, axis=-1)
        if r.t(1).dtype == "int":
            lead = 0
            return (r.op("label_add", r.mul(p, s), labels, s, sign=-1, lead=lead), None)
        rows = r.sum(labels, (r.t(0).rank - 1,), keepdims=True)
        d_logits = r.mul(r.sub(r.mul(p, rows), labels), s)
        d_labels = r.neg(r.mul(r.op("log_softmax", logits, axis=-1), s))
        return (d_logits, d_labels)

    @staticmethod
    def jvp(r):
        t_logits, t_labels = r.tangents
        logits, labels = r.x(0), r.x(1)
        p = r.op("softmax", logits, axis=-1) if t_logits is not None else None
        if r.t(1).dtype == "int":
            picked = r.op("label_pick", t_logits, labels, lead=0) if t_logits is not None else None
            total = r.sub(r.sum(r.mul(p, t_logits), None), r.sum(picked, None))
        else:
            rows = r.sum(labels, (r.t(0).rank - 1,), keepdims=True)
            d_logits = r.sub(r.mul(p, rows), labels) if t_logits is not None else None
            logp = r.op("log_softmax", logits, axis=-1) if t_labels is not None else None
            total = r.sub(r.sum(r.mul(d_logits, t_logits), None), r.sum(r.mul(logp, t_labels), None))
        return SoftmaxCrossEntropy._scale(r, total)


# --------------------------------------------------------------------------------------------------
# matrix products (notes sections 3, 4, 5)


def _mm_parts(s):
    a, b = s.types
    if a.rank == 0 or b.rank == 0:
        who = 0 if a.rank == 0 else 1
        s.fail(f"matmul needs tensors of rank >= 1, but {s.where(who)} is a scalar; use * to scale")
    ka = a.shape[-1]
    kb = b.shape[0] if b.rank == 1 else b.shape[-2]
    if ka != kb:
        s.fail(
            f"matmul inner dims differ: {ka} ({s.where(0)}) vs {kb} ({s.where(1)}), "
            f"in shapes {shape_str(a.shape)} @ {shape_str(b.shape)}{_unproven(ka, kb)}"
        )
    return a, b


@op(
    "matmul",
    (P("a"), P("b")),
    rule="matmul rule, notes section 5",
    jvp_rule="matmul JVP rule, notes section 5",
    callable=False,
    zeros="any",
    derivation="""
B = X Y gives dB = dX Y + X dY, so dX = dB Y^T and dY = X^T dB (notes section 5).  Matrix times vector
z = W x gives dW = outer(r, x), dx = W^T r (section 3); row vector times matrix z = x W gives
dW = outer(x, r), dx = r W^T (section 4); a dot product gives g * b and g * a.  Batched operands
(rank >= 3) follow numpy.matmul: batch dims broadcast, and a broadcast operand's cotangent is summed
over its broadcast batch axes.  When a batched X meets a 2-D Y, dY = sum_b X_b^T dB_b is computed as
one 2-D product over the flattened batch, X.reshape(-1, K).T @ dB.reshape(-1, M): the same sum, one
large BLAS call instead of a batched product and a reduction.  Accuracy: BLAS accumulates in the
operands' dtype (float32 in float32): the error grows like K eps times sum_k |x_k y_k|.""",
)
class MatMul:
    @staticmethod
    def shape(s):
        a, b = _mm_parts(s)
        if a.rank == 1 and b.rank == 1:
            return TensorType((), "float")
        if a.rank == 1:
            return TensorType(b.shape[:-2] + b.shape[-1:], "float")
        if b.rank == 1:
            return TensorType(a.shape[:-1], "float")
        batch = broadcast_shapes(s, [a.shape[:-2], b.shape[:-2]]) if (a.rank > 2 or b.rank > 2) else ()
        return TensorType(batch + (a.shape[-2], b.shape[-1]), "float")

    @staticmethod
    def forward(f):
        ta, tb = f.t(0), f.t(1)
        swapped = _swapped_last(f, 0) if ta.rank >= 3 and tb.rank == 2 else None
        if swapped is not None:
            # (the transpose of a batch [..., K, N]) @ [K, M] = ([M, K] @ the batch)^T: one product per
            # matrix of the batch as it is stored, no copy of the batch to flatten it (3-6x faster)
            return method(Bin("@", Attr(f.a(1), "T"), swapped), "swapaxes", num(-1), num(-2))
        if ta.rank >= 3 and tb.rank == 2:
            # [..., N, K] @ [K, M]: one 2-D product over the flattened batch (a batched product with a
            # broadcast 2-D operand measured up to 30x slower for float32 with OpenBLAS here)
            # (the row count spelled out, not -1, which NumPy cannot infer when a dim is 0)
            flat = method(f.a(0), "reshape", f.dim(numel(ta.shape[:-1])), f.dim(ta.shape[-1]))
            return method(Bin("@", flat, f.a(1)), "reshape", f.shape_tuple(f.out.shape))
        return Bin("@", f.a(0), f.a(1))

    @staticmethod
    def jvp(r):
        ta, tb = r.tangents
        da = r.op("matmul", ta, r.x(1)) if ta is not None else None
        db = r.op("matmul", r.x(0), tb) if tb is not None else None
        return r.add(da, db)

    @staticmethod
    def pullback(r):
        ra, rb = r.t(0).rank, r.t(1).rank
        a, b, g = r.x(0), r.x(1), r.g
        if ra > 2 or rb > 2:
            return _batched_matmul_pullback(r)
        if ra == 2 and rb == 2:
            return (r.op("matmul", g, r.transpose(b)), r.op("matmul", r.transpose(a), g))
        if ra == 2:  # W @ x, notes section 3
            r.note("matrix-vector rule, notes section 3")
            return (r.op("outer", g, b), r.op("matmul", r.transpose(a), g))
        if rb == 2:  # x @ W, notes section 4
            r.note("vector-matrix rule, notes section 4")
            return (r.op("matmul", g, r.transpose(b)), r.op("outer", a, g))
        r.note("dot product rule")
        return (r.mul(g, b), r.mul(g, a))

    @staticmethod
    def batch(r):
        """numpy.matmul over a batch: as a matmul when both operands are matrices (the batched one
        padded so that its batch axis stays in front), else as an einsum with one more index."""
        ta, tb, out = r.t(0), r.t(1), r.out
        xa, xb = r.batched
        if (xa is None) != (xb is None):  # a product with the unit vectors themselves: a copy
            structured = _basis_contract(r, _matmul_subscripts(r)[0], 0 if xa is not None else 1)
            if structured is not None:
                return structured
        if xa is None and ta.rank >= 2 and tb.rank == 2:
            # one matrix times a batch of matrices: one 2-D product over the batch (a contraction that
            # np.einsum(..., optimize=True) hands to BLAS once), not one product per batch element
            rows = numel(ta.shape[:-1])
            flat = r.op("contract", r.reshape(r.x(0), (rows, ta.shape[-1])), xb, subscripts="nk,zkm->znm")
            return r.reshape(flat, (r.size_dim,) + out.shape)
        if ta.rank >= 2 and tb.rank >= 2:
            a = r.pad(xa, out.rank) if xa is not None else r.x(0)
            b = r.pad(xb, out.rank) if xb is not None else r.x(1)
            return r.op("matmul", a, b)
        if tb.rank == 1 and xb is None:  # a batch of matrices times one vector
            return r.op("matmul", r.pad(xa, out.rank + 1), r.x(1))
        if ta.rank == 1 and tb.rank >= 2 and xa is None:  # one vector times a batch of matrices
            return r.op("matmul", r.x(0), r.pad(xb, out.rank + 1))
        if ta.rank == 1 and tb.rank == 2 and xb is None:
            return r.op("matmul", xa, r.x(1))  # rows of a batch of vectors: one matrix product
        if tb.rank == 1 and ta.rank == 2 and xa is None:
            return r.op("matmul", xb, r.transpose(r.x(0)))
        return _matmul_as_einsum(r)


def _swapped_last(f, i):
    """The array that operand i transposes, when operand i is its last two axes swapped (a view that a
    reshape would have to copy), else None."""
    node = f.operand_node(i)
    if node is None or node.op != "transpose":
        return None
    rank = f.t(i).rank
    if perm_of(node, rank) != tuple(range(rank - 2)) + (rank - 1, rank - 2):
        return None
    return f.value(node.args[0])


def _batched_matmul_pullback(r):
    """numpy.matmul with a batch: 1-D operands promoted to matrices, the cotangent of each operand
    reduced over the batch axes it was broadcast along (notes section 5 per batch element)."""
    r.note("batched matmul rule, notes section 5 per batch element")
    ta, tb, to = r.t(0), r.t(1), r.out
    a, b, g = r.x(0), r.x(1), r.g
    a_shape, b_shape = ta.shape, tb.shape
    if ta.rank == 1:
        a, a_shape = r.expand(a, (0,)), (Dim.const(1),) + ta.shape
        g = r.expand(g, (to.rank - 1,))
    if tb.rank == 1:
        b, b_shape = r.expand(b, (1,)), tb.shape + (Dim.const(1),)
        g = r.expand(g, (len(r.shape(g)),))
    batch = r.shape(g)[:-2]
    flat = len(b_shape) == 2 and ta.rank > 2 and tuple(a_shape[:-2]) == tuple(batch)
    da = r.op("matmul", g, r.swap_last(b))
    da = r.sum_to(da, a_shape)
    if flat:
        # dW = sum over the batch of X_b^T dB_b: one 2-D product over the flattened batch
        K, M = b_shape
        rows = numel(batch) * a_shape[-2]
        db = r.op("matmul", r.transpose(r.reshape(a, (rows, K))), r.reshape(g, (rows, M)))
    else:
        db = r.sum_to(r.op("matmul", r.swap_last(a), g), b_shape)
    return (r.reshape(da, ta.shape), r.reshape(db, tb.shape))


def _matmul_as_einsum(r):
    """A batched matmul that numpy.matmul's broadcasting cannot express, as an einsum."""
    spec, a, b = _matmul_subscripts(r)
    return r.op("einsum", a, b, subscripts=spec)


def _matmul_subscripts(r):
    """The batched matmul as einsum subscripts (batch index z) and its two operands."""
    ta, tb = r.t(0), r.t(1)
    k = "k"
    batch_rank = max(max(ta.rank, tb.rank) - 2, 0)
    bl = list("abcdefghijlopqrstuvwxy")[:batch_rank]
    sa = (bl[len(bl) - (ta.rank - 2) :] if ta.rank > 2 else []) + (["n", k] if ta.rank >= 2 else [k])
    sb = (bl[len(bl) - (tb.rank - 2) :] if tb.rank > 2 else []) + ([k, "m"] if tb.rank >= 2 else [k])
    so = bl + (["n"] if ta.rank >= 2 else []) + (["m"] if tb.rank >= 2 else [])
    xa, xb = r.batched
    sa_, a = (["z", *sa], xa) if xa is not None else (sa, r.x(0))
    sb_, b = (["z", *sb], xb) if xb is not None else (sb, r.x(1))
    spec = f"{''.join(sa_)},{''.join(sb_)}->z{''.join(so)}"
    return spec, a, b


# --------------------------------------------------------------------------------------------------
# layout ops


def _perm(s, rank):
    axes = s.attr("axes")
    if axes is None:
        return tuple(reversed(range(rank)))
    if sorted(a % rank if -rank <= a < rank else -999 for a in axes) != list(range(rank)):
        s.fail(
            f"axes {list(axes)} is not a permutation of the {rank} axes of {s.where(0)} (shape {shape_str(s.types[0].shape)})"
        )
    return tuple(a % rank for a in axes)


@op(
    "transpose",
    (P("a"), Param("axes", "axes")),
    rule="transpose rule: the inverse permutation",
    jvp_rule="transpose JVP rule: the tangent transposed",
    linear=True,
    shift=(1,),
    derivation="""
y = transpose(a, p) moves axis p[i] to position i; the cotangent moves back with the inverse
permutation, da = transpose(g, argsort(p)); .T reverses the axes and is its own inverse.  Exact.""",
)
class Transpose:
    @staticmethod
    def shape(s):
        t = s.types[0]
        p = _perm(s, t.rank)
        return TensorType(tuple(t.shape[i] for i in p), "float")

    @staticmethod
    def forward(f):
        rank = f.t(0).rank
        p = _perm(f, rank)
        if p == tuple(reversed(range(rank))):
            return Attr(f.a(0), "T")
        if p == tuple(range(rank - 2)) + (rank - 1, rank - 2):  # the batched matrices transposed
            return method(f.a(0), "swapaxes", Lit("-1"), Lit("-2"))
        return call("np.transpose", f.a(0), Lit(str(p)))

    @staticmethod
    def pullback(r):
        p = _perm(r, r.t(0).rank)
        return (r.transpose(r.g, tuple(sorted(range(len(p)), key=lambda i: p[i]))),)

    @staticmethod
    def batch(r):
        p = _perm(r, r.t(0).rank)
        return r.transpose(r.batched[0], (0,) + tuple(i + 1 for i in p))


def _divide_monomial(total: Dim, known: Dim) -> Dim | None:
    if len(total.terms) != 1 or len(known.terms) != 1:
        return None
    ((mt, ct),) = total.terms
    ((mk, ck),) = known.terms
    if ck == 0 or ct % ck:
        return None
    rest = list(mt)
    for sym in mk:
        if sym not in rest:
            return None
        rest.remove(sym)
    return Dim(((tuple(rest), ct // ck),))


@op(
    "reshape",
    (P("a"), P("shape", "shape")),
    rule="reshape rule: reshape back",
    jvp_rule="reshape JVP rule: the tangent reshaped",
    linear=True,
    shift=(1,),
    derivation="""
reshape only relabels elements in row-major order, so the cotangent is reshaped back: da = g.reshape(a.shape).
Exact.""",
)
class Reshape:
    @staticmethod
    def shape(s):
        t = s.types[0]
        total = numel(t.shape)
        dims = [d if isinstance(d, Dim) else None if d == -1 else Dim.const(d) for d in s.attr("shape")]
        known = Dim.const(1)
        for d in dims:
            if d is not None:
                known = known * d
        if None in dims:
            rest = _divide_monomial(total, known)
            if rest is None:
                s.fail(
                    f"cannot infer the -1 in reshape: {s.where(0)} has {total} elements "
                    f"(shape {shape_str(t.shape)}), which is not a multiple of {known} that the spec proves"
                )
            dims = [rest if d is None else d for d in dims]
        out = tuple(dims)
        if numel(out) != total:
            s.fail(
                f"reshape changes the number of elements: {s.where(0)} has shape {shape_str(t.shape)} "
                f"({total} elements), the new shape {shape_str(out)} has {numel(out)}"
            )
        return TensorType(out, "float")

    @staticmethod
    def forward(f):
        return method(f.a(0), "reshape", f.shape_tuple(f.out.shape))

    pullback = staticmethod(lambda r: (r.reshape(r.g, r.t(0).shape),))
    batch = staticmethod(lambda r: r.reshape(r.batched[0], (r.size_dim,) + r.out.shape))


@op(
    "concatenate",
    (P("tensors", "tensors"), Param("axis", "int", 0)),
    rule="concatenate rule: split back",
    jvp_rule="concatenate JVP rule: the tangents concatenated",
    zeros="all",
    derivation="""
y stacks the operands along an axis, so each operand's cotangent is its own slice of g along that axis.
Exact.""",
)
class Concatenate:
    @staticmethod
    def shape(s):
        ts = s.types
        rank = ts[0].rank
        if rank == 0:
            s.fail("concatenate needs operands of rank >= 1")
        for i, t in enumerate(ts):
            if t.rank != rank:
                s.fail(
                    f"concatenate needs operands of one rank: {s.where(0)} has {shape_str(ts[0].shape)}, {s.where(i)} has {shape_str(t.shape)}"
                )
        ax = norm_axes(s, s.attr("axis"), rank)[0]
        total = Dim.const(0)
        for i, t in enumerate(ts):
            for k in range(rank):
                if k != ax and t.shape[k] != ts[0].shape[k]:
                    s.fail(
                        f"concatenate along axis {ax}: dim {k} differs, {ts[0].shape[k]} ({s.where(0)}) vs {t.shape[k]} ({s.where(i)})"
                    )
            total = total + t.shape[ax]
        return TensorType(tuple(total if k == ax else d for k, d in enumerate(ts[0].shape)), "float")

    @staticmethod
    def forward(f):
        n = len(f.types)
        ax = norm_axes(f, f.attr("axis"), f.out.rank)[0]
        return call("np.concatenate", Tuple(tuple(f.a(i) for i in range(n))), axis=num(ax))

    @staticmethod
    def jvp(r):
        if all(t is None for t in r.tangents):
            return None
        ts = [r.zeros(r.t(i).shape) if t is None else t for i, t in enumerate(r.tangents)]
        return r.op("concatenate", *ts, axis=r.attr("axis"))

    @staticmethod
    def pullback(r):
        ax = norm_axes(r, r.attr("axis"), r.out.rank)[0]
        start, out = Dim.const(0), []
        for i in range(len(r.types)):
            end = start + r.t(i).shape[ax]
            out.append(r.op("slice_axis", r.g, axis=ax, start=start, stop=end))
            start = end
        return tuple(out)

    @staticmethod
    def batch(r):
        ax = norm_axes(r, r.attr("axis"), r.out.rank)[0]
        parts = [
            x if x is not None else r.broadcast(r.x(i), (r.size_dim,) + r.t(i).shape)
            for i, x in enumerate(r.batched)
        ]
        return r.op("concatenate", *parts, axis=ax + 1)


@op(
    "take",
    (P("a"), P("indices"), Param("axis", "int", 0)),
    rule="take rule: scatter-add",
    jvp_rule="take JVP rule: the tangent's slices taken",
    int_args=(1,),
    linear=True,
    zeros="all",  # of its float operand a
    domain=lambda k, attr, types: (
        Domain("indices", types[0].shape[attr("axis", 0) % types[0].rank]) if k == 1 else None
    ),
    derivation="""
y = take(a, idx, axis) copies slices of a; each slice of a receives the sum of the cotangents of every
position that copied it (repeated indices add up): a scatter-add of g into zeros shaped like a.
np.add.at measured within 1.6x of the fastest alternative here (argsort + np.add.reduceat; bincount
over flattened indices was slower below 50k rows) for [V, D] from [1000, 64] to [50000, 256], and
says what it does, so it stays.  Accuracy: the forward is exact; a row's gradient is a sum over its
repeats, one rounding per repeat.""",
)
class Take:
    @staticmethod
    def shape(s):
        a, idx = s.types
        if idx.dtype != "int":
            s.fail(f"take needs int indices, but {s.where(1)} is a float tensor")
        if a.rank == 0:
            s.fail(f"take needs a tensor of rank >= 1, but {s.where(0)} is a scalar")
        ax = norm_axes(s, s.attr("axis"), a.rank)[0]
        return TensorType(a.shape[:ax] + idx.shape + a.shape[ax + 1 :], "float")

    @staticmethod
    def forward(f):
        ax = norm_axes(f, f.attr("axis"), f.t(0).rank)[0]
        if ax == 0:
            return Index(f.a(0), (f.a(1),), True)
        return call("np.take", f.a(0), f.a(1), axis=num(ax))

    @staticmethod
    def pullback(r):
        ax = norm_axes(r, r.attr("axis"), r.t(0).rank)[0]
        return (r.op("scatter_add", r.g, r.x(1), axis=ax, shape=r.t(0).shape), None)

    batch = staticmethod(_axis_batch)


@op(
    "einsum",
    (P("subscripts", "str"), P("operands", "tensors")),
    varargs=True,
    rule="einsum rule: contract the cotangent with the other operands",
    jvp_rule="einsum JVP rule: one term per operand's tangent",
    zeros="any",
    derivation="""
y = einsum(s_1,...,s_n -> o) is linear in each operand, so operand i's cotangent is
einsum(o, s_j (j != i) -> s_i) of g with the other operands; an index that appears only in s_i was
summed in the forward pass and is broadcast back (np.broadcast_to).  Repeated indices within one
operand (diagonals) are refused.  Accuracy: as matmul, a contraction of n terms has an error of about
n eps times the sum of their magnitudes.""",
)
class Einsum:
    @staticmethod
    def parse(s):
        text = s.attr("subscripts").replace(" ", "")
        if "->" not in text:
            s.fail(f'einsum needs an explicit output, as in "ij,jk->ik"; got {text!r}')
        lhs, out = text.split("->", 1)
        terms = lhs.split(",")
        if "." in text:
            s.fail("einsum with ... (ellipsis) is not supported; name every axis")
        for t in terms + [out]:
            if not (t.isascii() and t.isalpha()) and t != "":  # NumPy takes a-z and A-Z only
                s.fail(f"einsum subscripts must be ASCII letters (a-z, A-Z); got {t!r}")
        for t in terms + [out]:
            if len(set(t)) != len(t):
                s.fail(f"einsum term {t!r} repeats an index (a diagonal or trace); this is not supported")
        return terms, out

    @staticmethod
    def shape(s):
        terms, out = Einsum.parse(s)
        if len(terms) != len(s.types):
            s.fail(
                f"einsum subscripts {s.attr('subscripts')!r} name {len(terms)} operands, but {len(s.types)} are given"
            )
        bound: dict[str, tuple[Dim, int]] = {}
        for i, (term, t) in enumerate(zip(terms, s.types)):
            if len(term) != t.rank:
                s.fail(
                    f"einsum term {term!r} has {len(term)} indices but {s.where(i)} has rank {t.rank} (shape {shape_str(t.shape)})"
                )
            for c, d in zip(term, t.shape):
                if c in bound and bound[c][0] != d:
                    s.fail(
                        f"einsum index {c!r} is {bound[c][0]} in {s.where(bound[c][1])} but {d} in {s.where(i)}"
                    )
                bound.setdefault(c, (d, i))
        for c in out:
            if c not in bound:
                s.fail(f"einsum output index {c!r} appears in no operand")
        return TensorType(tuple(bound[c][0] for c in out), "float")

    @staticmethod
    def forward(f):
        n = len(f.types)
        return call(
            "np.einsum", Lit(repr(f.attr("subscripts").replace(" ", ""))), *(f.a(i) for i in range(n))
        )

    @staticmethod
    def jvp(r):
        subs = r.attr("subscripts")
        total = None
        for i, t in enumerate(r.tangents):
            if t is not None:
                args = [t if j == i else r.x(j) for j in range(len(r.types))]
                total = r.add(total, r.op(r.node.op, *args, subscripts=subs))
        return total

    @staticmethod
    def pullback(r):
        terms, out = Einsum.parse(r)
        res = []
        for i in range(len(terms)):
            others = [j for j in range(len(terms)) if j != i]
            avail = set(out).union(*(set(terms[j]) for j in others))
            kept = "".join(c for c in terms[i] if c in avail)
            spec = ",".join([out] + [terms[j] for j in others]) + "->" + kept
            e = r.op(r.node.op, r.g, *(r.x(j) for j in others), subscripts=spec)
            missing = tuple(k for k, c in enumerate(terms[i]) if c not in avail)
            res.append(r.broadcast(r.expand(e, missing), r.t(i).shape))
        return tuple(res)

    @staticmethod
    def batch(r):
        terms, out = Einsum.parse(r)
        z = next(c for c in "zyxwvutsrqponmlkjihgfedcba" if c not in "".join(terms) + out)
        lhs = [z + t if x is not None else t for t, x in zip(terms, r.batched)]
        args = [x if x is not None else r.x(i) for i, x in enumerate(r.batched)]
        return r.op(r.node.op, *args, subscripts=",".join(lhs) + "->" + z + out)


@op(
    "contract",
    (P("subscripts", "str"), P("operands", "tensors")),
    varargs=True,
    rule="einsum rule: contract the cotangent with the other operands",
    jvp_rule="einsum JVP rule: one term per operand's tangent",
    internal=True,
    derivation="""
An einsum that NumPy hands to BLAS (np.einsum(..., optimize=True): a tensordot, one matrix product):
what batching turns a matrix times a batch of matrices into.  Its rules are einsum's.""",
)
class Contract(Einsum):
    @staticmethod
    def forward(f):
        if f.attr("subscripts") == "nk,zkm->znm":
            # one matrix times a batch of matrices: numpy.matmul broadcasts the matrix over the batch
            # and writes the result in its own layout; np.einsum would hand the same product to BLAS
            # as one call but copy the batch into a [K, Z * M] operand first and return a transposed
            # view, one more batch-sized buffer (measured 1.1-1.4x slower, benchmarks/README.md)
            return Bin("@", f.a(0), f.a(1))
        n = len(f.types)
        subs = Lit(repr(f.attr("subscripts")))
        return call("np.einsum", subs, *(f.a(i) for i in range(n)), optimize=Lit("True"))


# --------------------------------------------------------------------------------------------------
# internal ops: what derivative programs are built from besides the spec's ops.  Never written in a
# spec (``internal=True``); each has a shape rule, its NumPy, and its own JVP, pullback and batching
# rules, so that a derivative program can be differentiated and batched again.


@op(
    "broadcast_to",
    (P("a"), Param("shape", "dims")),
    rule="broadcast back",
    internal=True,
    fresh=False,
    linear=True,
    derivation="""
y = a repeated along the axes where a has size 1 or is missing: a read-only view (np.broadcast_to); its
pullback sums over those axes (notes section 6).""",
)
class BroadcastTo:
    @staticmethod
    def shape(s):
        t = s.types[0]
        shape = tuple(s.attr("shape"))
        if broadcast_shapes(s, [t.shape, shape]) != shape:
            s.fail(f"{shape_str(t.shape)} does not broadcast to {shape_str(shape)}")
        return TensorType(shape, t.dtype)

    forward = staticmethod(lambda f: call("np.broadcast_to", f.a(0), f.shape_tuple(f.out.shape)))
    pullback = staticmethod(lambda r: (r.sum_to(r.g, r.t(0).shape),))
    batch = staticmethod(lambda r: r.broadcast(r.pad(r.batched[0], r.out.rank), (r.size_dim,) + r.out.shape))


@op(
    "expand_dims",
    (P("a"), Param("axis", "axes")),
    rule="expand the reduced axes",
    internal=True,
    fresh=False,
    linear=True,
    derivation="y = a with axes of size 1 inserted at the given positions (a view); the pullback reshapes back.",
)
class ExpandDims:
    @staticmethod
    def shape(s):
        t = s.types[0]
        axes = tuple(s.attr("axis"))
        dims = list(t.shape)
        for ax in sorted(axes):
            dims.insert(ax, Dim.const(1))
        return TensorType(tuple(dims), t.dtype)

    forward = staticmethod(
        lambda f: call("np.expand_dims", f.a(0), axis=kw_axis(tuple(f.attr("axis")), f.out.rank))
    )
    pullback = staticmethod(lambda r: (r.reshape(r.g, r.t(0).shape),))
    batch = staticmethod(
        lambda r: r.op("expand_dims", r.batched[0], axis=tuple(a + 1 for a in r.attr("axis")))
    )


@op(
    "full",
    (P("value", "operand"), Param("shape", "dims")),
    rule="broadcast back",
    internal=True,
    fresh=True,
    number_operands=True,
    derivation="y = an array of the given shape filled with the scalar value, in the computation's dtype.",
)
class Full:
    @staticmethod
    def shape(s):
        t = s.types[0]
        if t is not None and t.rank != 0:
            s.fail(f"full needs a scalar value, not {shape_str(t.shape)}")
        return TensorType(tuple(s.attr("shape")), "float")

    forward = staticmethod(lambda f: call("np.full", f.shape_tuple(f.out.shape), f.a(0), dtype=f.dtype()))
    jvp = staticmethod(lambda r: r.broadcast(r.tangents[0], r.out.shape))
    pullback = staticmethod(lambda r: (r.sum(r.g, None),))
    batch = staticmethod(lambda r: r.broadcast(r.pad(r.batched[0], r.out.rank), (r.size_dim,) + r.out.shape))


@op(
    "zeros",
    (Param("shape", "dims"),),
    rule="no contribution: zeros",
    internal=True,
    fresh=True,
    derivation="y = zeros of the given shape in the computation's dtype (a derivative that is zero).",
)
class Zeros:
    shape = staticmethod(lambda s: TensorType(tuple(s.attr("shape")), "float"))
    forward = staticmethod(lambda f: call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: ())


@op(
    "scatter_add",
    (P("a"), P("indices"), Param("axis", "int"), Param("shape", "dims")),
    rule="take rule: scatter-add",
    int_args=(1,),
    internal=True,
    fresh=True,
    linear=True,
    derivation="""
y = zeros of the given shape, with each slice of a added at its index along the axis (np.add.at, so
repeated indices add up): the transpose of take.""",
)
class ScatterAdd:
    @staticmethod
    def shape(s):
        return TensorType(tuple(s.attr("shape")), "float")

    @staticmethod
    def forward(f):
        ax = f.attr("axis")
        f.stmt(f.var, call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
        index = f.a(1) if ax == 0 else Tuple(tuple(Lit("slice(None)") for _ in range(ax)) + (f.a(1),))
        f.stmt(None, call("np.add.at", f.var, index, f.a(0)))
        return None

    pullback = staticmethod(lambda r: (r.op("take", r.g, r.x(1), axis=r.attr("axis")), None))
    batch = staticmethod(
        lambda r: r.op(
            "scatter_add",
            r.batched[0],
            r.x(1),
            axis=r.attr("axis") + 1,
            shape=(r.size_dim,) + tuple(r.attr("shape")),
        )
    )


def _label_index(f, lead: int, labels: E) -> tuple[E, ...]:
    """The fancy index of each row's label: [:, ..., np.arange(N), labels], or [..., labels] for one row."""
    rows_shape = f.t(1).shape
    index = tuple(Lit(":") for _ in range(lead))
    if rows_shape:
        index += (call("np.arange", f.dim(rows_shape[0])),)
    return index + (labels,)


def _label_shape(s):
    a, labels = s.types[0], s.types[1]
    lead = s.attr("lead")
    if labels.dtype != "int" or a.shape[lead:-1] != labels.shape or labels.rank > 1:
        s.fail(f"labels {shape_str(labels.shape)} do not index the rows of {shape_str(a.shape)}")
    return a


@op(
    "label_pick",
    (P("a"), P("labels"), Param("lead", "int", 0)),
    rule="the label pick of softmax cross-entropy, notes section 2",
    int_args=(1,),
    internal=True,
    fresh=True,
    linear=True,
    derivation="y[i] = a[i, labels[i]]: each row's entry at its label (after ``lead`` batch axes).",
)
class LabelPick:
    @staticmethod
    def shape(s):
        a = _label_shape(s)
        return TensorType(a.shape[: s.attr("lead")] + s.types[1].shape, "float")

    forward = staticmethod(lambda f: Index(f.a(0), _label_index(f, f.attr("lead"), f.a(1)), True))
    pullback = staticmethod(
        lambda r: (r.op("label_add", r.zeros(r.t(0).shape), r.x(1), r.g, sign=1, lead=r.attr("lead")), None)
    )
    batch = staticmethod(lambda r: r.node_like(r.batched[0], lead=r.attr("lead") + 1))


@op(
    "label_add",
    (P("a"), P("labels"), P("s", "operand"), Param("sign", "int", 1), Param("lead", "int", 0)),
    rule="softmax cross-entropy rule, notes section 2",
    int_args=(1,),
    internal=True,
    fresh=True,
    number_operands=True,
    derivation="""
y = a + sign * s * onehot(labels): s added (or subtracted) at each row's label, no one-hot matrix
built (notes section 2).  Linear in (a, s): its tangent is label_add of the tangents, its pullback
gives g to a and sign * g picked at the labels to s.""",
)
class LabelAdd:
    @staticmethod
    def shape(s):
        a = _label_shape(s)
        return TensorType(a.shape, "float")

    @staticmethod
    def forward(f):
        f.stmt(f.var, method(f.a(0), "copy"))
        op_ = "+=" if f.attr("sign") > 0 else "-="
        f.stmt(f.var, f.a(2), op=op_, index=_label_index(f, f.attr("lead"), f.a(1)))
        return None

    @staticmethod
    def jvp(r):
        ta, _, ts = r.tangents
        if ta is None and ts is None:
            return None
        a = ta if ta is not None else r.zeros(r.out.shape)
        if ts is None:
            return a
        return r.op("label_add", a, r.x(1), ts, sign=r.attr("sign"), lead=r.attr("lead"))

    @staticmethod
    def pullback(r):
        picked = r.op("label_pick", r.g, r.x(1), lead=r.attr("lead"))
        ds = r.sum_to(picked, r.shape(r.x(2)))
        return (r.g, None, ds if r.attr("sign") > 0 else r.neg(ds))

    @staticmethod
    def batch(r):
        xa, _, xs = r.batched
        a = xa if xa is not None else r.broadcast(r.x(0), (r.size_dim,) + r.out.shape)
        picked_rank = r.t(1).rank + r.attr("lead")
        s = r.pad(xs, picked_rank) if xs is not None else r.x(2)
        return r.op("label_add", a, r.x(1), s, sign=r.attr("sign"), lead=r.attr("lead") + 1)


# the comparisons (greater, greater_equal, less, less_equal, ...) are in gradgen/ops_masks.py


@op(
    "sign",
    (P("a"),),
    rule="sign",
    elementwise=True,
    internal=True,
    fresh=True,
    derivation="y = sign(a): piecewise constant, so its derivatives are zero (sign'(0) = 0 too).",
)
class Sign(_Unary):
    forward = staticmethod(lambda f: call("np.sign", f.a(0)))
    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: (None,))


@op(
    "outer",
    (P("a"), P("b")),
    rule="outer product",
    jvp_rule="outer product JVP rule",
    internal=True,
    fresh=True,
    derivation="y[i, j] = a[i] b[j]: dy = outer(da, b) + outer(a, db); a receives g @ b, b receives a @ g.",
)
class Outer:
    @staticmethod
    def shape(s):
        a, b = s.types
        if a.rank != 1 or b.rank != 1:
            s.fail("outer needs two vectors")
        return TensorType(a.shape + b.shape, "float")

    forward = staticmethod(lambda f: call("np.outer", f.a(0), f.a(1)))

    @staticmethod
    def jvp(r):
        ta, tb = r.tangents
        da = r.op("outer", ta, r.x(1)) if ta is not None else None
        db = r.op("outer", r.x(0), tb) if tb is not None else None
        return r.add(da, db)

    pullback = staticmethod(lambda r: (r.op("matmul", r.g, r.x(1)), r.op("matmul", r.x(0), r.g)))

    @staticmethod
    def batch(r):
        xa, xb = r.batched
        if (xa is None) != (xb is None):  # a unit vector times a vector: a copy onto a diagonal
            spec = "zi,j->zij" if xa is not None else "i,zj->zij"
            structured = _basis_contract(r, spec, 0 if xa is not None else 1)
            if structured is not None:
                return structured
        a = r.expand(xa, (2,)) if xa is not None else r.expand(r.x(0), (1,))
        b = r.expand(xb, (1,)) if xb is not None else r.x(1)
        return r.mul(a, b)


@op(
    "slice_axis",
    (P("a"), Param("axis", "int"), Param("start", "dim"), Param("stop", "dim")),
    rule="concatenate rule: split back",
    internal=True,
    fresh=False,
    linear=True,
    derivation="y = a[..., start:stop, ...] along the axis (a view); its pullback pads g back with zeros.",
)
class SliceAxis:
    @staticmethod
    def shape(s):
        t = s.types[0]
        ax = s.attr("axis")
        return TensorType(
            t.shape[:ax] + (s.attr("stop") + Dim.const(-1) * s.attr("start"),) + t.shape[ax + 1 :], t.dtype
        )

    @staticmethod
    def forward(f):
        start, stop = f.attr("start"), f.attr("stop")
        sl = Slice(None if start.value == 0 else f.dim(start), f.dim(stop))
        return Index(f.a(0), tuple(Lit(":") for _ in range(f.attr("axis"))) + (sl,), False)

    pullback = staticmethod(
        lambda r: (
            r.op(
                "pad_axis",
                r.g,
                axis=r.attr("axis"),
                start=r.attr("start"),
                total=r.t(0).shape[r.attr("axis")],
            ),
        )
    )
    batch = staticmethod(lambda r: r.node_like(r.batched[0], axis=r.attr("axis") + 1))


@op(
    "pad_axis",
    (P("a"), Param("axis", "int"), Param("start", "dim"), Param("total", "dim")),
    rule="the transpose of a slice: zeros around it",
    internal=True,
    fresh=True,
    linear=True,
    derivation="y = zeros with ``total`` entries along the axis, a written from ``start`` on.",
)
class PadAxis:
    @staticmethod
    def shape(s):
        t = s.types[0]
        ax = s.attr("axis")
        return TensorType(t.shape[:ax] + (s.attr("total"),) + t.shape[ax + 1 :], "float")

    @staticmethod
    def forward(f):
        start, ax = f.attr("start"), f.attr("axis")
        stop = start + f.t(0).shape[ax]
        f.stmt(f.var, call("np.zeros", f.shape_tuple(f.out.shape), dtype=f.dtype()))
        sl = Slice(None if start.value == 0 else f.dim(start), f.dim(stop))
        f.stmt(f.var, f.a(0), op="=", index=tuple(Lit(":") for _ in range(ax)) + (sl,))
        return None

    @staticmethod
    def pullback(r):
        ax, start = r.attr("axis"), r.attr("start")
        return (r.op("slice_axis", r.g, axis=ax, start=start, stop=start + r.t(0).shape[ax]),)

    batch = staticmethod(lambda r: r.node_like(r.batched[0], axis=r.attr("axis") + 1))


@op(
    "basis",
    (Param("n", "dim"), Param("offset", "dim"), Param("shape", "dims")),
    rule="the basis vectors",
    internal=True,
    fresh=True,
    derivation="""
y[k] = the k-th of n unit vectors, restricted to the entries offset .. offset + numel(shape) and shaped
like one input: np.eye(n, numel, -offset).reshape((n,) + shape).  A batch of seeds, never differentiated.""",
)
class Basis:
    shape = staticmethod(lambda s: TensorType((s.attr("n"),) + tuple(s.attr("shape")), "float"))

    @staticmethod
    def forward(f):
        n, offset, shape = f.attr("n"), f.attr("offset"), tuple(f.attr("shape"))
        args = [f.dim(n), f.dim(numel(shape))]
        if offset.value != 0:
            args.append(f.dim(Dim.const(-1) * offset))
        eye = call("np.eye", *args, dtype=f.dtype())
        if len(shape) == 1:
            return eye
        return method(eye, "reshape", f.shape_tuple((n,) + shape))

    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: ())


@op(
    "sigmoid_tail",
    (P("a"),),
    rule="sigmoid rule, from the smaller tail",
    elementwise=True,
    internal=True,
    fresh=True,
    derivation="""
t = s(-|a|), the smaller of s(a) and 1 - s(a): what sigmoid's derivative s(a) (1 - s(a)) = t (1 - t) is
taken from.  The sigmoid of the same operand already computed it (its temporary ``tail``), so it is
read from there.  dt = -sign(a) t (1 - t) da.""",
)
class SigmoidTail(_Unary):
    @staticmethod
    def forward(f):
        saved = f.saved_by("sigmoid")
        if "tail" in saved:
            return saved["tail"]
        tail = _exp_neg_abs(f)
        f.stmt(tail, add(num(1), tail), op="/=")
        return tail

    partials = staticmethod(lambda r: (r.neg(r.mul(r.op("sign", r.x(0)), _tail_product(r, r.y))),))


@op(
    "cast",
    (P("a"),),
    rule="the mask as numbers",
    elementwise=True,
    internal=True,
    fresh=True,
    derivation="y = a (booleans) as numbers of the computation's dtype; piecewise constant.",
)
class Cast(_Unary):
    forward = staticmethod(lambda f: method(f.a(0), "astype", f.dtype()))
    jvp = staticmethod(lambda r: None)
    pullback = staticmethod(lambda r: (None,))


# issue 9's op families, one module each; importing one registers its rows
from gradgen import (  # noqa: E402
    ops_basis,  # noqa: F401  (scaled_basis, basis_contract: batching over unit vectors)
    ops_conv,  # noqa: F401  (pad, conv1d, conv2d, max_pool2d, avg_pool2d)
    ops_elem,  # noqa: F401  (sin, cos, log1p, expm1, erf, gelu, clip, a ** b)
    ops_index,  # noqa: F401  (static indexing, split, stack)
    ops_masks,  # noqa: F401  (comparisons, & | ~, where)
    ops_reduce,  # noqa: F401  (max, min, var, std, take_along_axis)
)


def callable_ops() -> tuple[str, ...]:
    """The ops a spec may call by name, sorted, read from the table at each call: an op family module
    registers its rows whenever it is first imported (possibly after this module), and a row added
    later (a test's, or one added by the README recipe) is callable as soon as it is in the table."""
    return tuple(sorted(name for name, d in TABLE.items() if d.callable))
