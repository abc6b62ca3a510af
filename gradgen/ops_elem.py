"""Issue 9's elementwise ops: sin, cos, log1p, expm1, erf, gelu, clip, and a ** b with a tensor b.

Rows in the same form as ``gradgen/ops.py`` (read its module docstring for the notation): each has its
shape rule, its NumPy forward, and the graph-level ``partials`` that forward mode, the reverse sweep
(``backward``, ``value_and_grad`` and the derivative kinds) and batching are built from.  All of them are elementwise, so a broadcast operand's cotangent is summed over its
broadcast axes by the sweep (notes section 6), never by a rule.

erf has no NumPy function: the row names the module-level function its code calls (``helpers``), and
``gradgen/special.py`` holds that function's source (W. J. Cody's rational approximations).
"""

from __future__ import annotations

import math

from gradgen.expr import Bin, add, call, mul, num
from gradgen.ir import POSITIVE, Const
from gradgen.ops import ONE, Over, P, Param, _Binary, _Unary, _unary, op

HALF = Const(0.5, "0.5")
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)  # erf'(0)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the standard normal density at 0
SQRT_HALF = math.sqrt(0.5)
TANH_C = math.sqrt(2 / math.pi)  # GELU's tanh approximation: tanh(c (a + k a^3))
TANH_K = 0.044715


def _const(value: float) -> Const:
    return Const(value, repr(value))


def _positive(k, attr, types):
    return POSITIVE


# --------------------------------------------------------------------------------------------------
# sin, cos, log1p, expm1: one NumPy ufunc each

_unary(
    "sin",
    "np.sin",
    "sin rule",
    "d sin(a) = cos(a) da.  Accuracy: NumPy's sin, within an ulp or two; for |a| beyond about 1e8 (float32: "
    "1e4) the argument's own rounding is larger than the period's resolution, as for any sin.",
    lambda r: r.op("cos", r.x(0)),
    zeros="all",
    magnitude="bounded",
)
_unary(
    "cos",
    "np.cos",
    "cos rule",
    "d cos(a) = -sin(a) da.  Accuracy: NumPy's cos, within an ulp or two (see sin for huge |a|).",
    lambda r: r.neg(r.op("sin", r.x(0))),
    magnitude="bounded",
)
_unary(
    "log1p",
    "np.log1p",
    "log1p rule",
    "log1p(a) = log(1 + a) without the rounding of 1 + a, so log1p(1e-10) keeps all its digits where "
    "log(1 + 1e-10) keeps 7.  d log1p(a) = da / (1 + a).  Accuracy: a few ulps for a > -1; -inf at "
    "-1, nan below; the derivative's 1 + a rounds once, a relative error of eps / |1 + a|, which only "
    "matters next to the pole at a = -1.",
    lambda r: Over(r.add(ONE, r.x(0))),
    zeros="all",
    domain=_positive,
)


_unary(
    "expm1",
    "np.expm1",
    "expm1 rule",
    "expm1(a) = exp(a) - 1 without the cancellation near a = 0 (np.expm1).  d expm1(a) = exp(a) da, "
    "computed as exp(a) and not as y + 1, which would round exp(a) to 0 below a = -37 (float64) where "
    "the true derivative is still 1e-16.  Accuracy: a few ulps; inf above a = 88.7 (float32) and 709.8 "
    "(float64), as for exp.",
    lambda r: r.op("exp", r.x(0)),
    zeros="all",
    magnitude="explodes",
    fresh=True,
)


# --------------------------------------------------------------------------------------------------
# erf, and the two GELUs


def _erf_partial(r, x):
    """erf'(x) = 2 / sqrt(pi) exp(-x^2), as nodes."""
    return r.mul(_const(TWO_OVER_SQRT_PI), r.op("exp", r.neg(r.op("square", x))))


@op(
    "erf",
    (P("a"),),
    rule="erf rule",
    elementwise=True,
    zeros="all",
    magnitude="bounded",
    fresh=True,
    helpers=("_erf",),
    derivation="""
erf(a) = 2 / sqrt(pi) * integral of exp(-t^2) from 0 to a, so d erf(a) = 2 / sqrt(pi) exp(-a^2) da.
NumPy has no erf: the module defines _erf, W. J. Cody's rational approximations (Math. Comp. 1969),
vectorized over the three ranges of |a| (np.where, no loop; gradgen/special.py).  Accuracy: within 4 ulps of
math.erf in float64 (measured at 10**6 points), float32 computed in float32; exactly +-1 from
|a| = 6 on, nan for nan, no overflow or invalid-operation warning for any input.  The derivative's
exp(-a^2) underflows to 0 beyond |a| = 26.6 (float64), where the true value is below 1e-308.""",
)
class Erf(_Unary):
    forward = staticmethod(lambda f: call("_erf", f.a(0)))

    partials = staticmethod(lambda r: (_erf_partial(r, r.x(0)),))


def _normal_pdf(r, x):
    """phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density, as nodes."""
    return r.mul(_const(INV_SQRT_2PI), r.op("exp", r.mul(_const(-0.5), r.op("square", x))))


def _cdf_expr(a):
    """Phi(a) = erfc(-a / sqrt(2)) / 2: relative precision kept in the far left tail (1 + erf(x) would
    round to 0 there), so GELU's small negative values keep their digits."""
    return mul(num(0.5), call("_erfc", mul(a, num(-SQRT_HALF))))


def _gelu_tanh_parts(a):
    """tanh(c (a + k a^3)), the tanh approximation's inner value."""
    return call("np.tanh", mul(num(TANH_C), add(a, mul(num(TANH_K), Bin("**", a, num(3))))))


@op(
    "gelu",
    (P("a"), Param("approximate", "choice", "none", choices=("none", "tanh"))),
    rule="GELU rule",
    elementwise=True,
    zeros="all",
    helpers=lambda attr: () if attr("approximate") == "tanh" else ("_erfc",),
    derivation=f"""
gelu(a) = a Phi(a), Phi the standard normal distribution function, as torch.nn.functional.gelu
computes it with approximate="none" (Hendrycks and Gimpel 2016).  d gelu(a) = (Phi(a) + a phi(a)) da,
phi(a) = exp(-a^2 / 2) / sqrt(2 pi) the density; Phi(a) is saved by the forward pass and reused.
Phi(a) = erfc(-a / sqrt(2)) / 2 through the module's _erfc (gradgen/special.py): unlike the usual
0.5 (1 + erf(a / sqrt(2))), it keeps its relative precision where Phi is tiny, so gelu(-10) is
-7.6e-23 rather than 0.  approximate="tanh" is torch's (and GPT-2's) 0.5 a (1 + t),
t = tanh(c (a + k a^3)), c = sqrt(2 / pi), k = {TANH_K}: d gelu(a) = (0.5 (1 + t) + 0.5 a (1 - t^2)
c (1 + 3 k a^2)) da, from the saved t.  Accuracy: a few ulps for the exact form over the whole range.
The tanh form is only as good as 1 + t: its value and derivative are 0 where t rounds to -1 (below
a = -5.4 in float32 and -7.2 in float64), as torch's are.""",
)
class Gelu(_Unary):
    @staticmethod
    def forward(f):
        a, shape = f.a(0), f.t(0).shape
        if f.attr("approximate") == "tanh":
            t = f.temp("tanh", _gelu_tanh_parts(a), shape)
            return mul(mul(num(0.5), a), add(num(1), t))
        cdf = f.temp("cdf", _cdf_expr(a), shape)
        return mul(a, cdf)

    @staticmethod
    def partials(r):
        x = r.x(0)
        if r.attr("approximate") == "tanh":
            t = r.op("gelu_tanh", x)  # the forward's t, read where the GELU saved it
            slope = r.add(_const(0.5 * TANH_C), r.mul(_const(1.5 * TANH_C * TANH_K), r.op("square", x)))
            spread = r.mul(r.mul(r.sub(ONE, r.mul(t, t)), slope), x)
            return (r.add(r.mul(HALF, r.add(ONE, t)), spread),)
        return (r.add(r.op("normal_cdf", x), r.mul(x, _normal_pdf(r, x))),)


@op(
    "normal_cdf",
    (P("a"),),
    rule="GELU rule",
    elementwise=True,
    internal=True,
    fresh=True,
    helpers=("_erfc",),
    derivation="""
Phi(a) = erfc(-a / sqrt(2)) / 2, the standard normal distribution function (exact GELU's factor and
the first term of its derivative): read from the GELU of the same operand where it saved it.
d Phi(a) = phi(a) da, phi the standard normal density.""",
)
class NormalCdf(_Unary):
    @staticmethod
    def forward(f):
        saved = f.saved_by("gelu")
        if "cdf" in saved:
            return saved["cdf"]
        return _cdf_expr(f.a(0))

    partials = staticmethod(lambda r: (_normal_pdf(r, r.x(0)),))


@op(
    "gelu_tanh",
    (P("a"),),
    rule="GELU rule",
    elementwise=True,
    internal=True,
    fresh=True,
    derivation=f"""
t = tanh(c (a + k a^3)), c = sqrt(2 / pi), k = {TANH_K}: the value that the tanh-approximate GELU and its
derivative share.  The GELU of the same operand computed it in the forward pass (its temporary ``tanh``),
so the backward pass reads it from there instead of computing the cube and the tanh again.
dt = (1 - t^2) c (1 + 3 k a^2) da.""",
)
class GeluTanh(_Unary):
    @staticmethod
    def forward(f):
        saved = f.saved_by("gelu")
        if "tanh" in saved:
            return saved["tanh"]
        return _gelu_tanh_parts(f.a(0))

    @staticmethod
    def partials(r):
        slope = r.add(_const(TANH_C), r.mul(_const(3 * TANH_C * TANH_K), r.op("square", r.x(0))))
        return (r.mul(r.sub(ONE, r.mul(r.y, r.y)), slope),)


# --------------------------------------------------------------------------------------------------
# clip


@op(
    "clip",
    (P("a"), P("lo", "operand"), P("hi", "operand")),
    rule="clip rule (1 inside [lo, hi], bounds included)",
    broadcast_rule="clip rule, broadcast reduced (notes section 6)",
    elementwise=True,
    zeros="all",
    fresh=True,
    derivation="""
clip(a, lo, hi) = minimum(maximum(a, lo), hi), as np.clip computes it (so lo > hi gives hi
everywhere).  Each element is one of a, lo, hi, and the gradient goes to the one picked:
a receives g where lo <= a <= hi (bounds included: at a == lo or a == hi the gradient goes to a,
torch.clamp's convention); lo receives g where a < lo and lo <= hi; hi receives g where
maximum(a, lo) > hi (a > hi, or everywhere when lo > hi).  Elsewhere 0: clip is flat outside the
bounds.  torch.clamp agrees except where lo == hi exactly and a < lo (torch gives that gradient to hi).
Exact.""",
)
class Clip:
    shape = staticmethod(_Binary.shape)  # NumPy broadcasting of a, lo and hi
    forward = staticmethod(lambda f: call("np.clip", f.a(0), f.a(1), f.a(2)))

    @staticmethod
    def partials(r):
        a, lo, hi = r.x(0), r.x(1), r.x(2)
        inside = r.mul(r.op("cast", r.op("greater_equal", a, lo)), r.op("less_equal", a, hi))
        below = None
        if not isinstance(lo, Const):
            below = r.mul(r.op("cast", r.op("less", a, lo)), r.op("less_equal", lo, hi))
        above = None if isinstance(hi, Const) else r.op("greater", r.op("maximum", a, lo), hi)
        return (inside, below, above)


# --------------------------------------------------------------------------------------------------
# a ** b with a tensor exponent


def _power_domain(k, attr, types):
    """The base is drawn positive (a real power of a negative number is nan)."""
    return POSITIVE if k == 0 else None


@op(
    "power",
    (P("a", "operand"), P("b", "operand")),
    rule="power rule (tensor exponent)",
    broadcast_rule="power rule (tensor exponent), broadcast reduced (notes section 6)",
    elementwise=True,
    callable=False,
    magnitude="explodes",
    domain=_power_domain,
    derivation="""
y = a ** b with b a tensor (a ** k with a number k is the pow row).  y = exp(b log a), so
dy = b a^(b - 1) da + y log(a) db: a receives g * b * a ** (b - 1), b receives g * y * log(a) (the
output reused).  A number base c (2 ** x) is folded: log(c) is computed when the spec is built.
At a = 0, log(a) is -inf while y is 0 (b > 0) or 1 (b = 0): the limit of y log(a) is 0 there, so the
rule takes log of a with its zeros replaced by 1, log(where(a == 0, 1, a)), and b's gradient is 0
where a base is exactly 0 (as torch.pow gives; a sigmoid base that underflowed to 0 would otherwise
make it nan).  Accuracy: NumPy's power, a few ulps; a negative base gives nan for both cotangents, as
its real power does.""",
)
class Power:
    shape = staticmethod(_Binary.shape)
    forward = staticmethod(lambda f: Bin("**", f.a(0), f.a(1)))

    @staticmethod
    def partials(r):
        a, e = r.x(0), r.x(1)
        da = None if isinstance(a, Const) else r.mul(e, r.op("power", a, r.sub(e, ONE)))
        if isinstance(a, Const):
            log_a = _const(math.log(a.value))
        else:  # log(a) with a's zeros replaced by 1: y log(a) -> 0 there
            log_a = r.op("log", r.op("where", r.op("equal", a, Const(0, "0")), ONE, a))
        return (da, None if isinstance(e, Const) else r.mul(r.y, log_a))
