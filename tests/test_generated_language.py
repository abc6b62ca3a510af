"""The spec-language features in generated modules: values named like ops or builtins, dims used as
numbers (float32 kept), products of dims checked at run time, and the names generated code needs."""

from __future__ import annotations

import ast
import builtins
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from gradgen.lower import DERIVATIVE_NAMES, RESERVED
from gradgen.pipeline import build_text

ROOT = Path(__file__).resolve().parent.parent


def build(text: str, tmp_path: Path, name: str = "mod"):
    built = build_text(f"{name}.yaml", text)
    files = dict(built.files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"lang_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return files[f"{name}.py"], module


def central_difference(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for k in range(x.size):
        up, down = x.copy(), x.copy()
        up.flat[k] += eps
        down.flat[k] -= eps
        out.flat[k] = (f(up) - f(down)) / (2 * eps)
    return out


NAMED_LIKE_OPS = """\
inputs:
  x: [N, D]
  w: [D]
graph:
  exp: x * w
  sum: exp(exp) - 1
  var: mean(square(sum), axis=0)
  abs: abs(var) + 0.5
  max: maximum(abs, 1.0)
  len: sqrt(max)
  print: log(len)
  e: print * e
  pi: sum(e) / pi
"""


def test_values_named_like_ops_and_builtins_give_a_working_module(tmp_path):
    source, m = build(NAMED_LIKE_OPS, tmp_path)
    assert "    sum = np.exp(exp)\n" in source or "np.exp(exp" in source

    def reference(x, w):
        s = np.exp(x * w) - 1
        var = np.mean(s**2, axis=0)
        len_ = np.sqrt(np.maximum(np.abs(var) + 0.5, 1.0))
        return np.sum(np.log(len_) * math.e) / math.pi

    rng = np.random.default_rng(0)
    x, w = 0.3 * rng.standard_normal((4, 3)), rng.standard_normal(3)
    value, grads = m.value_and_grad(x, w)
    assert np.isclose(value, reference(x, w), rtol=1e-12)
    np.testing.assert_allclose(
        grads.x, central_difference(lambda v: reference(v, w), x), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(
        grads.w, central_difference(lambda v: reference(x, v), w), rtol=1e-5, atol=1e-8
    )


DIMS_AS_NUMBERS = """\
inputs:
  x: [N, K]
  W: [K, 2*K]
graph:
  h: x @ W / sqrt(K)
  loss: sum(h * h) / N + mean(h) * (2 * K - 1) / (1 / 3)
"""


def test_dims_as_numbers_run_with_the_bound_sizes_and_keep_float32(tmp_path):
    source, m = build(DIMS_AS_NUMBERS, tmp_path)
    assert "import math\n" in source and "math.sqrt(K)" in source

    def reference(x, W):
        n, k = x.shape
        h = x @ W / np.sqrt(k)
        return np.sum(h * h) / n + np.mean(h) * (2 * k - 1) * 3

    rng = np.random.default_rng(1)
    x, W = rng.standard_normal((5, 3)), rng.standard_normal((3, 6))
    value, grads = m.value_and_grad(x, W)
    assert np.isclose(value, reference(x, W), rtol=1e-12)
    np.testing.assert_allclose(
        grads.W, central_difference(lambda v: reference(x, v), W), rtol=1e-5, atol=1e-8
    )
    value32, grads32 = m.value_and_grad(x.astype(np.float32), W.astype(np.float32))
    assert np.asarray(value32).dtype == np.float32
    assert grads32.x.dtype == grads32.W.dtype == np.float32
    _, cache = m.forward(x.astype(np.float32), W.astype(np.float32))
    assert all(g.dtype == np.float32 for g in m.backward(np.float32(1.0), cache))


def test_math_is_imported_only_when_a_number_needs_it(tmp_path):
    source, _ = build(DIMS_AS_NUMBERS.replace("sqrt(K)", "K"), tmp_path)
    assert "math" not in source


def test_a_product_axis_is_checked_at_run_time(tmp_path):
    text = "inputs:\n  x: [B, H*Dh]\n  w: [H, Dh]\ngraph:\n  y: sum(reshape(x, [B, H, Dh]) * w)\n"
    source, m = build(text, tmp_path)
    x, w = np.ones((2, 12)), np.ones((3, 4))
    assert m.forward(x, w)[0] == 24.0
    with pytest.raises(ValueError) as info:
        m.forward(np.ones((2, 13)), w)
    assert str(info.value) == "x: dim 1 must be Dh*H = 12 (Dh = 4, H = 3), got 13"
    # the product is checked once its dims are bound, after the input that binds them
    assert source.index("H, Dh = w.shape") < source.index("if x.shape[1] != Dh * H:")


def test_a_product_whose_dims_are_bound_first_is_checked_with_its_input(tmp_path):
    text = "inputs:\n  x: [N, D]\n  W: [D, 3*D]\ngraph:\n  y: sum(x @ W)\n"
    _, m = build(text, tmp_path)
    with pytest.raises(ValueError, match=r"W: dim 1 must be 3\*D = 6 \(D = 2\), got 5"):
        m.forward(np.ones((4, 2)), np.ones((2, 5)))
    assert m.forward(np.ones((4, 2)), np.ones((2, 6)))[0] == 48.0


PROBE = """\
inputs:
  x: [N, D]
  i: {shape: [K], dtype: int}
graph:
  t: take(x, i, axis=1)
  c: concatenate((t, x), axis=1)
  s: sum(softmax(c, axis=0) + log_softmax(c) + logsumexp(c, axis=0, keepdims=True))
"""


def test_the_builtins_that_generated_functions_read_are_reserved_names():
    """A value named like a builtin that the generated functions call would shadow it there."""
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.yaml"))]
    read = set()
    for text in texts + [NAMED_LIKE_OPS, DIMS_AS_NUMBERS, PROBE]:
        built = build_text("probe.yaml", text)
        module = ast.parse(dict(built.files)[f"{built.name}.py"])
        # the functions whose locals include spec names: the public ones and the input check (the
        # other helpers take fixed parameters, so no spec name can shadow what they read)
        scoped = (n for n in module.body if isinstance(n, ast.FunctionDef))
        for fn in (f for f in scoped if not f.name.startswith("_") or f.name == "_check_inputs"):
            a = fn.args
            local = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x}
            local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            local |= {h.name for h in ast.walk(fn) if isinstance(h, ast.ExceptHandler) and h.name}
            for node in ast.walk(fn):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in local:
                    read.add(node.id)
    assert {"slice", "ValueError", "math", "np"} <= read  # (the probes reach them all)
    # the module's own helpers start with an underscore, which no spec name may; the derivative kinds'
    # functions and NamedTuples are refused as spec names when a kind uses them
    kinds = {name for names in DERIVATIVE_NAMES.values() for name, _ in names}
    private = {name for name in read if name.startswith("_")}
    globals_ = {"np", "math", "Gradients"} | kinds | private
    assert read - globals_ <= set(dir(builtins))
    assert read - {"math"} - kinds - private <= set(RESERVED), read - set(RESERVED)
