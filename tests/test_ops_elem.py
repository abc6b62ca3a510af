"""Issue 9's elementwise ops (gradgen/ops_elem.py) through the pipeline, without torch: lowering and
folding, the helper functions a module defines, float32 kept, clip's convention at its bounds, and
each op's gradient (backward and the graph-level rules of jvp and hvp) against central differences."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from gradgen.ir import Const
from gradgen.load import load
from gradgen.lower import lower
from gradgen.pipeline import build_text


def build(text: str, tmp_path: Path, name: str = "mod"):
    files = dict(build_text(f"{name}.yaml", text).files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"ops_elem_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return files[f"{name}.py"], module


@pytest.mark.parametrize(
    "expr, value",
    [
        ("erf(0.5)", math.erf(0.5)),
        ("sin(pi / 6) + cos(0)", math.sin(math.pi / 6) + 1.0),
        ("log1p(1e-10)", math.log1p(1e-10)),
        ("expm1(1e-10)", math.expm1(1e-10)),
    ],
)
def test_number_arguments_fold_at_build_time(expr, value):
    graph, _ = lower(load("s.yaml", f"inputs:\n  x: [N]\ngraph:\n  y: x * ({expr})\n"))
    (const,) = [a for n in graph.nodes for a in n.args if isinstance(a, Const)]
    assert const.value == value


def test_a_dim_as_a_number_uses_math_functions(tmp_path):
    code, mod = build("inputs:\n  x: [K]\ngraph:\n  y: sum(x * sin(K) + erf(K) * x)\n", tmp_path)
    assert "math.sin(K)" in code and "math.erf(K)" in code and "import math" in code
    x = np.arange(3, dtype=np.float32)
    y, _ = mod.forward(x)
    assert y.dtype == np.float32
    assert y == pytest.approx(float(np.sum(x * math.sin(3) + math.erf(3) * x)), rel=1e-6)


def test_helpers_are_defined_only_in_modules_that_use_them(tmp_path):
    plain, _ = build("inputs:\n  x: [N]\ngraph:\n  y: sum(sin(x))\n", tmp_path, "plain")
    assert "_erf" not in plain
    erf, _ = build("inputs:\n  x: [N]\ngraph:\n  y: sum(erf(x))\n", tmp_path, "erf")
    assert "def _erf(" in erf and "def _erfc_big(" in erf and "def _erfc(" not in erf
    gelu, _ = build("inputs:\n  x: [N]\ngraph:\n  y: sum(gelu(x))\n", tmp_path, "gelu")
    assert "def _erfc(" in gelu
    tanh, _ = build('inputs:\n  x: [N]\ngraph:\n  y: sum(gelu(x, approximate="tanh"))\n', tmp_path, "tanh")
    assert "_erf" not in tanh  # the tanh form needs no error function
    assert "import scipy" not in erf + gelu


def test_exact_gelu_saves_phi_and_reuses_it(tmp_path):
    code, _ = build("inputs:\n  x: [N]\ngraph:\n  y: sum(gelu(x))\n", tmp_path)
    assert code.count("_erfc(") == 3  # the definition, one call in forward, one in value_and_grad
    backward = code[code.index("def backward") : code.index("def value_and_grad")]
    assert "_erfc" not in backward and "y_gelu_cdf" in backward


def test_tanh_gelu_saves_t_and_reuses_it(tmp_path):
    """The tanh approximation's t = tanh(c (x + k x^3)) is computed once per function that runs the
    forward pass: backward reads the forward's t from the cache, value_and_grad, jvp and hvp reuse it."""
    text = (
        'inputs:\n  x: [N]\ngraph:\n  y: sum(gelu(x, approximate="tanh") * x)\nderivatives: [vjp, jvp, hvp]\n'
    )
    code, mod = build(text, tmp_path)
    names = ("forward", "backward", "value_and_grad", "jvp", "hvp")
    functions = {name: code.split(f"\ndef {name}(")[1].split("\ndef ")[0] for name in names}
    assert "np.tanh" not in functions["backward"] and "y_gelu_tanh" in functions["backward"]
    for name in ("forward", "value_and_grad", "jvp", "hvp"):
        assert functions[name].count("np.tanh(") == 1, (name, functions[name])
        assert functions[name].count("**3") + functions[name].count("** 3") == 1, (name, functions[name])
    x = np.linspace(-4, 4, 9)
    c, k = math.sqrt(2 / math.pi), 0.044715
    t = np.tanh(c * (x + k * x**3))
    want = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * k * x * x)
    _, grads = mod.value_and_grad(x)
    np.testing.assert_allclose(grads.x, want * x + 0.5 * x * (1 + t), rtol=1e-13)
    _, cache = mod.forward(x)
    np.testing.assert_allclose(mod.backward(2.0, cache).x, 2 * grads.x, rtol=1e-15)


def test_exact_and_tanh_gelu_of_one_operand_each_reuse_their_own_value(tmp_path):
    text = 'inputs:\n  x: [N]\ngraph:\n  y: sum(gelu(x) * gelu(x, approximate="tanh"))\n'
    code, mod = build(text, tmp_path)
    backward = code.split("\ndef backward(")[1].split("\ndef ")[0]
    assert "np.tanh" not in backward and "_erfc(" not in backward
    x = np.linspace(-3, 3, 7)
    _, grads = mod.value_and_grad(x)
    np.testing.assert_allclose(
        grads.x, central(lambda x_: float(mod.forward(x_)[0]), x), rtol=1e-6, atol=1e-9
    )
    _, cache = mod.forward(x)
    np.testing.assert_allclose(mod.backward(1.0, cache).x, grads.x, rtol=1e-14)


def test_a_number_base_folds_its_log(tmp_path):
    code, mod = build("inputs:\n  b: [N]\ngraph:\n  y: sum(2 ** b)\n", tmp_path)
    assert repr(math.log(2)) in code and "np.log" not in code
    b = np.array([0.5, -1.0, 2.0], np.float32)
    value, grads = mod.value_and_grad(b)
    assert value == pytest.approx(float(np.sum(2.0**b)), rel=1e-6) and grads.b.dtype == np.float32
    np.testing.assert_allclose(grads.b, 2.0**b * math.log(2), rtol=1e-6)


def test_clip_gradient_goes_to_a_at_the_bounds_and_to_the_bound_outside(tmp_path):
    _, mod = build(
        "inputs:\n  x: [N]\n  lo: [N]\n  hi: [N]\ngraph:\n  y: sum(clip(x, lo, hi) * x)\n", tmp_path
    )
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.0])
    lo = np.array([-1.0, -1.0, -1.0, -1.0, -1.0, 1.0])
    hi = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0])  # the last: lo > hi, so the output is hi
    _, g = mod.value_and_grad(x, lo, hi)
    y = np.clip(x, lo, hi)
    inside = np.array([0, 1, 1, 1, 0, 0.0])  # bounds included: x == lo and x == hi count as inside
    np.testing.assert_array_equal(g.x, y + x * inside)
    np.testing.assert_array_equal(g.lo, x * np.array([1, 0, 0, 0, 0, 0.0]))
    np.testing.assert_array_equal(g.hi, x * np.array([0, 0, 0, 0, 1, 1.0]))


def central(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for k in range(x.size):
        up, down = x.copy(), x.copy()
        up.flat[k] += eps
        down.flat[k] -= eps
        out.flat[k] = (f(up) - f(down)) / (2 * eps)
    return out


OPS = ["sin(x)", "cos(x)", "log1p(x)", "expm1(x)", "erf(x)", "gelu(x)", 'gelu(x, approximate="tanh")']


@pytest.mark.parametrize("expr", OPS + ["clip(x, -0.5, w)", "x ** w", "2 ** x"])
def test_gradient_jvp_and_hvp_against_differences(expr, tmp_path):
    text = f"inputs:\n  x: [N]\n  w: [N]\ngraph:\n  y: sum({expr} * w * x)\nderivatives: [jvp, hvp]\n"
    _, mod = build(text, tmp_path)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 2.0, 6) if "**" in expr or "log1p" in expr else rng.uniform(-3, 3, 6)
    w = rng.uniform(0.2, 1.5, 6)

    def f(x_, w_=w):
        return float(mod.forward(x_, w_)[0])

    value, grads = mod.value_and_grad(x, w)
    assert value == pytest.approx(f(x))
    np.testing.assert_allclose(grads.x, central(f, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads.w, central(lambda w_: f(x, w_), w), rtol=1e-6, atol=1e-8)
    tx, tw = rng.standard_normal(6), rng.standard_normal(6)
    _, dot = mod.jvp(x, w, [tx, tw])
    assert dot == pytest.approx(grads.x @ tx + grads.w @ tw, rel=1e-10)
    _, _, hv = mod.hvp(x, w, [tx, tw])

    def grad_along(t):
        return np.concatenate(mod.value_and_grad(x + t * tx, w + t * tw)[1])

    want = (grad_along(1e-5) - grad_along(-1e-5)) / 2e-5
    np.testing.assert_allclose(np.concatenate(hv), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("expr", OPS + ["clip(x, -0.5, w)", "x ** w"])
def test_float32_stays_float32(expr, tmp_path):
    _, mod = build(f"inputs:\n  x: [N]\n  w: [N]\ngraph:\n  y: sum({expr} * w)\n", tmp_path)
    x = np.linspace(0.1, 2.0, 5, dtype=np.float32)
    value, grads = mod.value_and_grad(x, x[::-1].copy())
    assert value.dtype == np.float32 and grads.x.dtype == np.float32 and grads.w.dtype == np.float32


def test_the_exponent_gradient_is_zero_at_a_zero_base(tmp_path):
    """y log(a) -> 0 as a -> 0 (b > 0), and y = 1, log taken of 1, at b = 0: never 0 * -inf = nan."""
    text = "inputs:\n  a: [N]\n  b: [N]\ngraph:\n  y: sum(a ** b)\nwrt: b\nderivatives: [jvp, hvp]\n"
    _, mod = build(text, tmp_path)
    a, b = np.array([0.0, 0.0, 2.0]), np.array([2.0, 0.0, 1.5])
    with np.errstate(all="raise"):
        _, grads = mod.value_and_grad(a, b)
        _, dot = mod.jvp(a, b, [np.ones(3)])
        _, _, hv = mod.hvp(a, b, [np.ones(3)])
    np.testing.assert_allclose(grads.b, [0.0, 0.0, 2.0**1.5 * math.log(2)])
    assert dot == pytest.approx(2.0**1.5 * math.log(2)) and np.all(np.isfinite(hv.b))
