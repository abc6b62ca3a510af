"""Numerics at the edges: generated values and gradients against a 60-digit reference.

The reference is computed with ``decimal`` at 60 significant digits (exp and ln of exact inputs), so it
is exact to the last bit of float64; a generated result must be within a few ulps of it in its own dtype,
and nonzero wherever the true value is a nonzero number of that dtype.  Every run raises on a floating
point overflow, division by zero or invalid operation, and on any RuntimeWarning.
"""

from __future__ import annotations

import types
import warnings
from decimal import Context, Decimal
from pathlib import Path

import numpy as np
import pytest

from gradgen.pipeline import build_text

ROOT = Path(__file__).resolve().parents[1]
EDGES = (-1000.0, -100.0, -40.0, -20.0, 0.0, 20.0, 40.0, 100.0, 1000.0)
DTYPES = (np.float32, np.float64)
ULPS = 4
CTX = Context(prec=60)


def module_from(spec_text: str, name: str = "spec.yaml"):
    built = build_text(name, spec_text)
    files = dict(built.files)
    mod = types.ModuleType(built.name)
    exec(compile(files[f"{built.name}.py"], f"{built.name}.py", "exec"), mod.__dict__)
    return mod


def strict(fn, *args):
    """fn(*args) with every floating point warning (but underflow) turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            return fn(*args)


# -- the reference ---------------------------------------------------------------------------------


def _exp(x: Decimal) -> Decimal:
    return CTX.exp(x)


def sigmoid(z: float) -> Decimal:
    return CTX.divide(1, CTX.add(1, _exp(-Decimal(z))))


def softplus(z: float) -> Decimal:
    """log(1 + exp(z)), written so that the logarithm's argument keeps 60 digits for large |z|."""
    d = Decimal(z)
    if d > 0:
        return CTX.add(d, CTX.ln(CTX.add(1, _exp(-d))))
    return CTX.ln(CTX.add(1, _exp(d)))


def close(got, want: Decimal, dtype, what: str) -> None:
    """got within ULPS ulps of the dtype at the true value; nonzero where the true value is."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert np.isfinite(got), f"{what}: {got}"
    ref = dtype(float(want))  # (correctly rounded to float64, then to the dtype)
    if ref != 0:
        assert got != 0, f"{what}: 0, true value {float(want):.6g}"
    tol = ULPS * np.spacing(np.abs(ref))
    assert (
        abs(got - ref) <= tol
    ), f"{what}: {got!r}, true {float(want):.17g} ({abs(got - ref) / tol * ULPS:.1f} ulps)"


# -- elementwise ops: value and derivative at every edge ---------------------------------------------


ELEMENTWISE = {
    # op: (value, derivative)
    "sigmoid": (sigmoid, lambda z: CTX.multiply(sigmoid(z), sigmoid(-z))),
    "log_sigmoid": (lambda z: -softplus(-z), lambda z: sigmoid(-z)),
    "softplus": (softplus, sigmoid),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_elementwise_value_and_derivative_at_the_edges(op, dtype):
    mod = module_from(f"inputs:\n  z: [N]\ngraph:\n  y: {op}(z)\n")
    value, derivative = ELEMENTWISE[op]
    z = np.array(EDGES, dtype=dtype)
    y, cache = strict(mod.forward, z)
    (dz,) = strict(mod.backward, np.ones_like(z), cache)
    for k, zk in enumerate(EDGES):
        close(y[k], value(zk), dtype, f"{op}({zk}) in {dtype.__name__}")
        close(dz[k], derivative(zk), dtype, f"{op}'({zk}) in {dtype.__name__}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_elementwise_scalar_input(op, dtype):
    """Shape []: numpy scalars, where no buffer can be written in place."""
    mod = module_from(f"inputs:\n  z: []\ngraph:\n  y: {op}(z)\n")
    value, derivative = ELEMENTWISE[op]
    for zk in (-100.0, 0.5, 40.0):
        y, grads = strict(mod.value_and_grad, dtype(zk))
        close(y, value(zk), dtype, f"{op}({zk})")
        close(grads.z, derivative(zk), dtype, f"{op}'({zk})")


def test_old_sigmoid_formula_fails_where_the_new_one_holds():
    """The test above is not vacuous: 0.5 + 0.5 tanh(z / 2) is 0 at z = -40 in float32 and float64."""
    for dtype in DTYPES:
        z = dtype(-40.0)
        assert dtype(0.5) + dtype(0.5) * np.tanh(z / dtype(2)) == 0
        assert dtype(float(sigmoid(-40.0))) != 0


# -- the rewrites, end to end ------------------------------------------------------------------------


REWRITTEN = {
    # spec expression of z: (value, derivative)
    "log(sigmoid(z))": (lambda z: -softplus(-z), lambda z: sigmoid(-z)),
    "log(1 - sigmoid(z))": (lambda z: -softplus(z), lambda z: -sigmoid(z)),
    "log(1.0 - sigmoid(z))": (lambda z: -softplus(z), lambda z: -sigmoid(z)),
    "log(1 + exp(z))": (softplus, sigmoid),
    "log(exp(z) + 1)": (softplus, sigmoid),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("expr", sorted(REWRITTEN))
def test_rewritten_compositions_are_exact_at_the_edges(expr, dtype):
    mod = module_from(f"inputs:\n  z: [N]\ngraph:\n  y: {expr}\n")
    value, derivative = REWRITTEN[expr]
    z = np.array(EDGES, dtype=dtype)
    y, cache = strict(mod.forward, z)
    (dz,) = strict(mod.backward, np.ones_like(z), cache)
    for k, zk in enumerate(EDGES):
        close(y[k], value(zk), dtype, f"{expr} at {zk}")
        close(dz[k], derivative(zk), dtype, f"d/dz {expr} at {zk}")


def _lse(row) -> Decimal:
    m = max(Decimal(v) for v in row)
    return CTX.add(m, CTX.ln(sum((_exp(Decimal(v) - m) for v in row), Decimal(0))))


LOGITS = ((1000.0, 0.0, -1000.0), (-200.0, -150.0, -100.0), (30.0, 29.0, -80.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_log_softmax_and_logsumexp_rewrites_with_huge_logits(dtype):
    mod = module_from(
        "inputs:\n  x: [N, C]\n  v: [N, C]\ngraph:\n"
        "  a: log(softmax(x)) * v\n  b: log(sum(exp(x), axis=1))\n  loss: sum(a) + sum(b)\n"
    )
    x = np.array(LOGITS, dtype=dtype)
    v = np.array([[1.0, 2.0, 3.0]] * len(LOGITS), dtype=dtype)
    out, cache = strict(mod.forward, x, v)
    grads = strict(mod.backward, 1.0, cache)
    want = Decimal(0)
    for i, row in enumerate(LOGITS):
        lse = _lse(row)
        want += lse + sum((Decimal(v[i, c].item()) * (Decimal(row[c]) - lse) for c in range(3)), Decimal(0))
    # sum(v) = 6 per row: d/dx_c = v_c - 6 softmax_c + softmax_c
    for i, row in enumerate(LOGITS):
        lse = _lse(row)
        for c in range(3):
            p = _exp(Decimal(row[c]) - lse)
            close(grads.x[i, c], Decimal(v[i, c].item()) - 5 * p, dtype, f"dx[{i}, {c}]")
    assert abs(float(out) - float(want)) <= 8 * np.finfo(dtype).eps * abs(float(want))


# -- the shipped binary_logistic spec, unchanged, at |z| = 1000 ------------------------------------


def _binary_logistic():
    path = ROOT / "specs" / "binary_logistic.yaml"
    return module_from(path.read_text(), "specs/binary_logistic.yaml")


BL_CASES = [(z, t) for z in EDGES for t in (0.0, 1.0)] + [(-1000.0, 0.25), (1000.0, 0.75), (35.0, 0.5)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("z, t", BL_CASES)
def test_binary_logistic_value_and_gradient_at_the_edges(z, t, dtype):
    """One example with x = [[1]], w = [z], b = 0: loss = t softplus(-z) + (1 - t) softplus(z) and
    d loss / dz = sigmoid(z) - t, which is both dw and db."""
    mod = _binary_logistic()
    x = np.ones((1, 1), dtype=dtype)
    w = np.array([z], dtype=dtype)
    b = dtype(0.0)
    t_ = np.array([t], dtype=dtype)
    loss, grads = strict(mod.value_and_grad, x, t_, w, b)
    dt = Decimal(t)
    want = CTX.add(CTX.multiply(dt, softplus(-z)), CTX.multiply(1 - dt, softplus(z)))
    dz = CTX.subtract(sigmoid(z), dt)
    close(loss, want, dtype, f"loss at z={z}, t={t}")
    close(grads.w[0], dz, dtype, f"dw at z={z}, t={t}")
    close(grads.b, dz, dtype, f"db at z={z}, t={t}")
    # forward + backward agree with the fused function bit for bit
    out, cache = strict(mod.forward, x, t_, w, b)
    again = strict(mod.backward, 1.0, cache)
    assert out == loss and again.w[0] == grads.w[0] and again.b == grads.b


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_binary_logistic_batch_of_badly_classified_examples(dtype):
    """A batch mixing |z| = 1000 with ordinary values: finite, and the mean of the per-example terms."""
    mod = _binary_logistic()
    zs = np.array([-1000.0, 1000.0, -20.0, 3.0, 100.0], dtype=dtype)
    ts = np.array([1.0, 0.0, 1.0, 0.0, 1.0], dtype=dtype)
    x = np.eye(5, dtype=dtype)
    loss, grads = strict(mod.value_and_grad, x, ts, zs.copy(), dtype(0.0))
    terms = [
        CTX.add(
            CTX.multiply(Decimal(t.item()), softplus(-z.item())),
            CTX.multiply(1 - Decimal(t.item()), softplus(z.item())),
        )
        for z, t in zip(zs, ts)
    ]
    close(loss, CTX.divide(sum(terms, Decimal(0)), 5), dtype, "mean loss")
    for k in range(5):
        dz = CTX.divide(CTX.subtract(sigmoid(zs[k].item()), Decimal(ts[k].item())), 5)
        close(grads.w[k], dz, dtype, f"dw[{k}]")


# -- the audit's documented ranges: masks and huge logits ---------------------------------------------


MASKED = ((2.0, -np.inf, 0.5, -1.0), (-np.inf, -np.inf, 3.0, -np.inf), (1e30, -1e30, 0.0, -np.inf))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "expr", ["sum(softmax(x) * v)", "sum(logsumexp(x) * v[0])", "softmax_cross_entropy(x, y)"]
)
def test_masked_and_huge_logits_stay_finite(expr, dtype):
    """-inf entries (a mask) and logits of 1e30: finite values, exact zeros where the mask is, no
    warning, and the same result as the float64 reference on the unmasked entries."""
    expr = expr.replace("v[0]", "1")
    spec = (
        "inputs:\n  x: [N, C]\n  v: [N, C]\n  y: {shape: [N], dtype: int}\n"
        f"graph:\n  loss: {expr}\nwrt: [x]\n"
    )
    mod = module_from(spec)
    x = np.array(MASKED, dtype=dtype)
    v = np.arange(1.0, 13.0, dtype=dtype).reshape(3, 4)
    y = np.array([0, 2, 0])
    loss, grads = strict(mod.value_and_grad, x, v, y)
    assert np.isfinite(loss) and np.all(np.isfinite(grads.x))
    assert np.all(grads.x[np.isneginf(x)] == 0)
    x64 = np.array(MASKED)
    m = x64.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        p = np.exp(x64 - m)
    p /= p.sum(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True)))[:, 0]
    if expr.startswith("sum(softmax"):
        vv = np.arange(1.0, 13.0).reshape(3, 4)
        want, dx = (p * vv).sum(), p * (vv - (p * vv).sum(axis=1, keepdims=True))
    elif expr.startswith("sum(logsumexp"):
        want, dx = lse.sum(), p
    else:
        want = (lse - x64[np.arange(3), y]).mean()
        dx = p.copy()
        dx[np.arange(3), y] -= 1
        dx /= 3
    tol = 8 * np.finfo(dtype).eps
    assert abs(loss - want) <= tol * max(1.0, abs(want)), (loss, want)
    np.testing.assert_allclose(grads.x, dx, rtol=tol, atol=tol)
