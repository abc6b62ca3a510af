"""The module-level functions generated modules define for themselves (gradgen/special.py): erf and
erfc against the standard library's math.erf / math.erfc, in float64 and float32, at the edges."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from gradgen import special


@pytest.fixture(scope="module")
def ns():
    namespace = {"np": np}
    exec(compile(special.source(["_erf", "_erfc"]), "special", "exec"), namespace)
    return namespace


def _points():
    rng = np.random.default_rng(9)
    edges = [0.0, -0.0, 0.46875, -0.46875, np.nextafter(0.46875, 1), 4.0, -4.0, np.nextafter(4.0, 5)]
    edges += [6.0, -6.0, 26.5, 27.5, 30.0, -30.0, 1e-300, 5e-324, -1e-10, 1e10]
    return np.concatenate(
        [
            rng.uniform(-7, 7, 200_000),
            rng.uniform(-0.5, 0.5, 50_000),
            rng.uniform(-30, 30, 20_000),
            np.linspace(-7, 7, 14_001),
            edges,
        ]
    )


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


def test_erf_is_within_4_ulps_of_math_erf(ns):
    x = _points()
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = ns["_erf"](x)
    want = np.array([math.erf(v) for v in x])
    assert got.dtype == np.float64 and got.shape == x.shape
    assert _ulps(got, want).max() <= 4
    assert np.mean(got == want) > 0.8  # most values are the correctly rounded one
    assert np.all(np.abs(got) <= 1) and np.all(got[x >= 6] == 1) and np.all(got[x <= -6] == -1)
    assert np.array_equal(np.signbit(got[x == 0]), np.signbit(x[x == 0]))  # erf(-0.0) is -0.0


def test_erfc_keeps_its_relative_precision_in_the_tail(ns):
    x = _points()
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = ns["_erfc"](x)
    want = np.array([math.erfc(v) for v in x])
    normal = want > 1e-300  # below, the result is subnormal and keeps fewer digits
    assert _ulps(got[normal], want[normal]).max() <= 8
    assert np.all(np.abs(got[~normal] - want[~normal]) < 1e-305)
    assert ns["_erfc"](np.array(5.0)) == pytest.approx(math.erfc(5.0), rel=1e-15)  # 1 - erf: 1.5e-12, exact


def test_special_values_and_shapes(ns):
    erf, erfc = ns["_erf"], ns["_erfc"]
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        assert erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]
        assert erfc(np.array([np.inf, -np.inf])).tolist() == [0.0, 2.0]
    assert np.isnan(erf(np.array([np.nan]))).all() and np.isnan(erfc(np.array([np.nan]))).all()
    assert erf(np.float64(0.3)) == pytest.approx(math.erf(0.3), rel=1e-15)  # a NumPy scalar
    assert erf(np.zeros((0, 3))).shape == (0, 3) and erf(np.ones((2, 1, 3))).shape == (2, 1, 3)


def test_float32_stays_float32_and_is_accurate(ns):
    x = _points()
    x = x[np.abs(x) < 1e5].astype(np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got, gotc = ns["_erf"](x), ns["_erfc"](x)
    assert got.dtype == np.float32 and gotc.dtype == np.float32
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.abs(got - exact).max() <= 2 * np.finfo(np.float32).eps


def test_only_needed_helpers_are_defined_with_what_they_call():
    assert special.needed(["_erf"]) == ("_erf_small", "_erfc_big", "_erf")
    assert special.needed(["_erfc"]) == ("_erf_small", "_erfc_big", "_erfc")
    assert special.needed([]) == () and special.source([]) == ""
    tree = ast.parse(special.source(["_erf"]))
    assert [f.name for f in tree.body] == ["_erf_small", "_erfc_big", "_erf"]
    assert not any(isinstance(n, (ast.For, ast.While, ast.comprehension)) for n in ast.walk(tree))
