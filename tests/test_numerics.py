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
