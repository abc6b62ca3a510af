"""Functions a generated module defines for itself when one of its ops needs them (erf, erfc).

NumPy has no error function, and a generated module imports nothing but NumPy and the standard
library, so an op row names the functions its NumPy code calls (``OpDef.helpers``) and the module
gets their definitions, below its classes.  Each one is vectorized (no Python loop over the data:
np.where between formulas, a boolean mask for a rare range), computes in its argument's dtype
(float32 stays float32) and signals no overflow, division by zero or invalid operation for any input,
inf and nan included.

The error function follows W. J. Cody, "Rational Chebyshev approximations for the error function",
Math. Comp. 23 (1969), the algorithm of Netlib's SPECFUN ``CALERF``: a rational function of x^2 for
|x| <= 0.46875, and erfc(|x|) = exp(-x^2) R(|x|) above, with R a rational function of |x| up to 4 and
of 1 / x^2 beyond.  exp(-x^2) is taken as exp(-s^2) exp(-(|x| - s)(|x| + s)), s = |x| rounded down to
a multiple of 1/16, so that the rounding of x^2 (up to 36 * eps at |x| = 6) never reaches the
exponent.  |x| is capped at 27.5, where erfc has underflowed to 0 in float64, so that inf needs no case
of its own; only underflow can be signalled (a subnormal x squared, erfc beyond 26.5), which NumPy
ignores by default.  Against math.erf and math.erfc (``tests/test_special.py``): erf within 4 ulps
over the float64 range, erfc within 8 ulps down to 1e-300.
"""

from __future__ import annotations

# Cody's coefficients (SPECFUN CALERF), highest power first: erf(x) = x P(x^2) / Q(x^2) for
# |x| <= 0.46875; erfc(y) = exp(-y^2) P(y) / Q(y) for 0.46875 < y <= 4; and for y > 4,
# erfc(y) = exp(-y^2) (1 / sqrt(pi) - z P(z) / Q(z)) / y with z = 1 / y^2 (Q monic, its 1 first).
ERF_P = (
    1.85777706184603153e-1,
    3.16112374387056560e0,
    1.13864154151050156e2,
    3.77485237685302021e2,
    3.20937758913846947e3,
)
ERF_Q = (1.0, 2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3, 2.84423683343917062e3)
MID_P = (
    2.15311535474403846e-8,
    5.64188496988670089e-1,
    8.88314979438837594e0,
    6.61191906371416295e1,
    2.98635138197400131e2,
    8.81952221241769090e2,
    1.71204761263407058e3,
    2.05107837782607147e3,
    1.23033935479799725e3,
)
MID_Q = (
    1.0,
    1.57449261107098347e1,
    1.17693950891312499e2,
    5.37181101862009858e2,
    1.62138957456669019e3,
    3.29079923573345963e3,
    4.36261909014324716e3,
    3.43936767414372164e3,
    1.23033935480374942e3,
)
TAIL_P = (
    1.63153871373020978e-2,
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
)
TAIL_Q = (
    1.0,
    2.56852019228982242e0,
    1.87295284992346047e0,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)


def horner(name: str, var: str, coeffs: tuple[float, ...], indent: int = 4) -> str:
    """Statements that evaluate the polynomial into ``name`` by Horner's scheme, in place: one
    multiply and one add per coefficient, straight-line code (no loop in the generated module), and
    no temporary array beyond ``name`` itself."""
    first = f"{name} = {var} + {coeffs[1]!r}" if coeffs[0] == 1.0 else f"{name} = {coeffs[0]!r} * {var}"
    lines = [first] + ([] if coeffs[0] == 1.0 else [f"{name} += {coeffs[1]!r}"])
    for c in coeffs[2:]:
        lines += [f"{name} *= {var}", f"{name} += {c!r}"]
    return ("\n" + " " * indent).join(lines)


# What each helper calls besides NumPy: it is defined too.
NEEDS = {
    "_erf": ("_erf_small", "_erfc_big"),
    "_erfc": ("_erf_small", "_erfc_big"),
    "_erf_small": (),
    "_erfc_big": (),
}

# The small and the middle range's formulas are evaluated on the whole array and np.where picks per
# element (gathering each range with a boolean mask and scattering it back measured 2-4x slower); the
# arguments are clamped into each formula's range first, so that nothing overflows or divides by zero
# where a formula is not the one picked.  The far tail (|x| > 4, rare in activations) is gathered.
SOURCE = {
    "_erf_small": f'''
def _erf_small(x):
    """erf(x) for |x| <= 0.46875: x P(x^2) / Q(x^2), W. J. Cody's rational approximation (1969);
    x is clamped to that range (the caller picks this value only there)."""
    t = np.clip(x, -0.46875, 0.46875)
    z = t * t
    {horner("num", "z", ERF_P)}
    {horner("den", "z", ERF_Q)}
    num *= t
    num /= den
    return num
''',
    "_erfc_big": f'''
def _erfc_big(y):
    """erfc(y) for y = |x| >= 0.46875 (an array), from W. J. Cody's rational approximations (1969):
    exp(-y^2) P(y) / Q(y) up to y = 4, exp(-y^2) (1 / sqrt(pi) - z P(z) / Q(z)) / y beyond, z = 1 / y^2."""
    y = np.minimum(y, 27.5)  # erfc(27.5) rounds to 0 in float64: exp never sees -inf or inf
    {horner("num", "y", MID_P)}
    {horner("den", "y", MID_Q)}
    out = np.asarray(num / den)
    far = y > 4.0
    if far.any():  # the far tail is rare: only its values are gathered and computed again
        t = y[far]
        z = 1.0 / (t * t)
        {horner("num", "z", TAIL_P, 8)}
        {horner("den", "z", TAIL_Q, 8)}
        out[far] = (0.5641895835477563 - z * num / den) / t
    # exp(-y^2) as exp(-s^2) exp(-(y - s)(y + s)), s = y rounded down to a multiple of 1/16: the
    # rounding of y * y never reaches the exponent
    s = np.trunc(y * 16.0)
    s /= 16.0
    out *= np.exp(-s * s)
    out *= np.exp((s - y) * (y + s))
    return out
''',
    "_erf": '''
def _erf(x):
    """erf(x), elementwise in x's dtype, within 4 ulps (W. J. Cody 1969; see _erfc_big)."""
    x = np.asarray(x)
    y = np.abs(x)
    big = np.copysign(1.0 - _erfc_big(y), x)
    return np.where(y <= 0.46875, _erf_small(x), big)  # nan: not <=, so the second, nan
''',
    "_erfc": '''
def _erfc(x):
    """erfc(x) = 1 - erf(x), elementwise in x's dtype, without the cancellation of 1 - erf(x): a few
    ulps relative to erfc itself, so erfc(5) = 1.5e-12 keeps its digits (Cody 1969; see _erfc_big)."""
    x = np.asarray(x)
    y = np.abs(x)
    big = _erfc_big(y)
    big = np.where(x < 0, 2.0 - big, big)
    return np.where(y <= 0.46875, 1.0 - _erf_small(x), big)
''',
}

ORDER = ("_erf_small", "_erfc_big", "_erf", "_erfc")


def needed(names) -> tuple[str, ...]:
    """The helpers to define for these, with what they call, in definition order."""
    want: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in want:
            want.add(name)
            stack.extend(NEEDS[name])
    return tuple(n for n in ORDER if n in want)


def source(names) -> str:
    """The definitions, ready to render into a module."""
    return "\n\n\n".join(SOURCE[n].strip() for n in needed(names))
