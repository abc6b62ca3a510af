"""The generated ``objective`` adapters drive scipy.optimize as documented (SciPy is a test dependency
only; the generated modules never import it):

- ``logreg_l2`` (multinomial logistic regression with an L2 penalty, strictly convex) fitted by
  trust-ncg with the generated Hessian-vector products, by Newton-CG and by trust-exact with the
  generated Hessian, all at the coefficients L-BFGS finds, to 1e-6;
- ``exp_fit`` (a sum of two decaying exponentials) fitted by least_squares with the generated Jacobian,
  recovering the rates and amplitudes the data were made from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

optimize = pytest.importorskip("scipy.optimize")

GENERATED = Path(__file__).resolve().parent.parent / "generated"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gradgen_fit_{name}", GENERATED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _classification(seed=0, n=200, d=5, c=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    true_W = rng.standard_normal((d, c))
    y = (X @ true_W + 0.5 * rng.standard_normal((n, c))).argmax(axis=1)
    return X, y, np.zeros((d, c)), np.zeros(c)


def test_module_does_not_import_scipy():
    for name in ("logreg_l2", "exp_fit"):
        text = (GENERATED / f"{name}.py").read_text()
        assert "scipy" not in text.replace("scipy.optimize.minimize", "").replace("scipy.optimize", "")


@pytest.mark.parametrize("method", ["trust-ncg", "Newton-CG", "trust-exact"])
def test_newton_type_fits_agree_with_lbfgs(method):
    m = load("logreg_l2")
    X, y, W0, b0 = _classification()
    obj = m.objective(X, y)
    theta0 = obj.pack(W0, b0)
    ref = optimize.minimize(
        obj.fun,
        theta0,
        jac=obj.jac,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 5000},
    )
    assert ref.success, ref.message
    if method == "trust-exact":
        res = optimize.minimize(
            obj.fun, theta0, jac=obj.jac, hess=obj.hess, method=method, options={"gtol": 1e-10}
        )
    else:
        options = {"xtol": 1e-12} if method == "Newton-CG" else {"gtol": 1e-8}
        res = optimize.minimize(obj.fun, theta0, jac=obj.jac, hessp=obj.hessp, method=method, options=options)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=0, atol=1e-6)
    assert res.fun == pytest.approx(ref.fun, rel=1e-10)
    # a Newton-type method needs far fewer iterations than a quasi-Newton one
    assert res.nit < ref.nit
    W, b = obj.unpack(res.x)
    assert W.shape == W0.shape and b.shape == b0.shape


def test_newton_cg_with_the_full_hessian_matches_hessp():
    m = load("logreg_l2")
    X, y, W0, b0 = _classification(seed=1)
    obj = m.objective(X, y)
    theta0 = obj.pack(W0, b0)
    with_hessp = optimize.minimize(obj.fun, theta0, jac=obj.jac, hessp=obj.hessp, method="Newton-CG")
    with_hess = optimize.minimize(obj.fun, theta0, jac=obj.jac, hess=obj.hess, method="Newton-CG")
    np.testing.assert_allclose(with_hess.x, with_hessp.x, atol=1e-8)


def _decays(seed=0, m=60):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, m)
    a_true, rate_true = np.array([2.0, 0.7]), np.array([0.5, 3.0])
    data = np.exp(-np.outer(t, rate_true)) @ a_true + 1e-4 * rng.standard_normal(m)
    return t, data, a_true, rate_true


def test_least_squares_with_the_generated_jacobian_recovers_the_decays():
    m = load("exp_fit")
    t, data, a_true, rate_true = _decays()
    obj = m.objective(t, data)
    theta0 = obj.pack(np.array([1.0, 1.0]), np.array([0.2, 1.0]))
    res = optimize.least_squares(obj.fun, theta0, jac=obj.jac, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    assert res.success, res.message
    a, rate = obj.unpack(res.x)
    order = np.argsort(rate)
    np.testing.assert_allclose(rate[order], rate_true, rtol=1e-3)
    np.testing.assert_allclose(a[order], a_true, rtol=1e-3)
    # the same fit with scipy's own finite-difference Jacobian lands at the same parameters
    fd = optimize.least_squares(obj.fun, theta0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(fd.x, res.x, rtol=1e-6)
    # the Jacobian scipy sees is the one of obj.fun
    J = obj.jac(res.x)
    eps = 1e-6
    for k in range(theta0.size):
        e = np.zeros_like(theta0)
        e[k] = eps
        np.testing.assert_allclose(
            J[:, k], (obj.fun(res.x + e) - obj.fun(res.x - e)) / (2 * eps), rtol=1e-6, atol=1e-8
        )


def test_jacobian_chooses_rows_or_columns_at_run_time_and_both_agree():
    m = load("exp_fit")
    t, data, _, _ = _decays(m=3)  # M = 3 <= 2 K = 4: rows
    a, rate = np.array([1.0, 2.0]), np.array([0.3, 0.9])
    _, rows = m._jacobian_rows(t, data, a, rate)
    _, cols = m._jacobian_columns(t, data, a, rate)
    _, chosen = m.jacobian(t, data, a, rate)
    for name in ("a", "rate"):
        np.testing.assert_allclose(getattr(rows, name), getattr(cols, name), rtol=1e-12)
        np.testing.assert_allclose(getattr(chosen, name), getattr(rows, name), rtol=1e-12)
    source = (GENERATED / "exp_fit.py").read_text()
    assert "if M <= 2 * K:" in source
