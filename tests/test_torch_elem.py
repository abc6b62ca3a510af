"""Issue 9's elementwise ops and specs/bert_ffn.yaml against PyTorch autograd: values and gradients of
generated modules equal torch's in float64 (to rounding) and float32 (to float32 precision), including
the conventions at the edges (clip's bounds, GELU's tails, erf's saturation)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gradgen.pipeline import build_text

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def build(text: str, tmp_path: Path, name: str):
    files = dict(build_text(f"{name}.yaml", text).files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"torch_elem_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_generated(name: str):
    spec = importlib.util.spec_from_file_location(f"torch_elem_gen_{name}", ROOT / "generated" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_grads(fn, arrays: dict[str, np.ndarray], wrt):
    """fn's value and the gradients of its sum w.r.t. ``wrt``, by torch autograd on the same numbers."""
    ts = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in arrays.items()}
    out = fn(**ts)
    out.sum().backward()
    return out.detach().numpy(), {k: ts[k].grad.numpy() for k in wrt}


def close(got, want, dtype):
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


UNARY = {
    "sin": torch.sin,
    "cos": torch.cos,
    "log1p": torch.log1p,
    "expm1": torch.expm1,
    "erf": torch.erf,
    'gelu(x, approximate="none")': lambda x: torch.nn.functional.gelu(x),
    'gelu(x, approximate="tanh")': lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op", list(UNARY))
def test_unary_op_matches_torch(op, dtype, tmp_path):
    expr = op if "(" in op else f"{op}(x)"
    name = op.split("(")[0] + ("_tanh" if "tanh" in op else "")
    mod = build(f"inputs:\n  x: [N]\n  w: [N]\ngraph:\n  y: {expr}\n  loss: sum(y * w)\n", tmp_path, name)
    rng = np.random.default_rng(3)
    # the whole range, the tails included: GELU's far left, erf's saturation, expm1 and log1p near 0
    x = np.concatenate([rng.uniform(-4, 4, 200), [-12.0, -8.0, -5.5, -1e-9, 0.0, 1e-9, 5.5, 8.0, 12.0]])
    if op == "log1p":
        x = np.abs(x) - 0.9  # log1p needs x > -1
    x = x.astype(dtype)
    w = rng.standard_normal(x.shape).astype(dtype)
    value, grads = mod.value_and_grad(x, w)
    fn = UNARY[op]
    y_want, g_want = torch_grads(lambda x, w: fn(x) * w, {"x": x, "w": w}, ["x", "w"])
    close(np.asarray(value), np.asarray(y_want.sum(), dtype), dtype)
    close(grads.x, g_want["x"], dtype)
    close(grads.w, g_want["w"], dtype)


def test_exact_gelu_keeps_its_far_left_tail(tmp_path):
    """gelu(-10) = -10 Phi(-10) = -7.6e-23: torch's 1 + erf form rounds Phi to 0 there, gradgen's
    erfc form keeps the digits (checked against math.erfc)."""
    import math

    mod = build("inputs:\n  x: [N]\ngraph:\n  y: gelu(x)\n", tmp_path, "gelu_tail")
    x = np.array([-10.0, -20.0, -30.0])
    y, cache = mod.forward(x)
    want = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(y, want, rtol=1e-12)  # x / sqrt(2) rounds: erfc's conditioning 2 u^2 eps
    (dx,) = mod.backward(np.ones(3), cache)
    phi = np.array([math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in x])
    np.testing.assert_allclose(
        dx, 0.5 * np.array([math.erfc(-v / math.sqrt(2)) for v in x]) + x * phi, rtol=1e-13
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_matches_torch_clamp_at_and_between_the_bounds(dtype, tmp_path):
    mod = build(
        "inputs:\n  x: [N, D]\n  lo: [D]\n  hi: [N, 1]\n  w: [N, D]\n"
        "graph:\n  y: clip(x, lo, hi)\n  loss: sum(y * w)\n",
        tmp_path,
        "clip_tensors",
    )
    rng = np.random.default_rng(5)
    lo = np.array([-0.5, 0.0, 0.25, -1.0, 0.5], dtype)
    hi = np.array([[0.6], [1.0], [0.75], [-2.0]], dtype)  # the last row: hi < lo everywhere
    x = rng.uniform(-1.5, 1.5, (4, 5)).astype(dtype)
    x[0, 0], x[1, 1], x[2, 2] = lo[0], lo[1], hi[2, 0]  # exactly at a bound: the gradient goes to x
    w = rng.standard_normal((4, 5)).astype(dtype)
    value, grads = mod.value_and_grad(x, lo, hi, w)
    want_y, want = torch_grads(
        lambda x, lo, hi, w: torch.clamp(x, lo, hi) * w, dict(x=x, lo=lo, hi=hi, w=w), ["x", "lo", "hi", "w"]
    )
    close(np.asarray(value), np.asarray(want_y.sum(), dtype), dtype)
    for k in ("x", "lo", "hi", "w"):
        close(getattr(grads, k), want[k], dtype)
    assert grads.x[0, 0] == w[0, 0] and grads.x[2, 2] == w[2, 2] and np.all(grads.x[3] == 0)


def test_clip_with_equal_bounds_gives_the_gradient_to_lo(tmp_path):
    """Where lo == hi and a < lo, the output is lo (= hi): gradgen gives the gradient to lo, as
    minimum(maximum(a, lo), hi) with ties to the first operand does.  torch.clamp gives it to no one
    there (its lo mask needs lo < hi, its hi mask a > hi): the one place the two differ."""
    mod = build(
        "inputs:\n  x: [N]\n  lo: [N]\n  hi: [N]\ngraph:\n  y: sum(clip(x, lo, hi))\n", tmp_path, "clip_eq"
    )
    x, lo, hi = np.array([0.0, 0.5, 1.0]), np.full(3, 0.5), np.full(3, 0.5)
    _, grads = mod.value_and_grad(x, lo, hi)
    assert grads.x.tolist() == [0.0, 1.0, 0.0]
    assert grads.lo.tolist() == [1.0, 0.0, 0.0] and grads.hi.tolist() == [0.0, 0.0, 1.0]
    _, want = torch_grads(
        lambda x, lo, hi: torch.clamp(x, lo, hi), dict(x=x, lo=lo, hi=hi), ["x", "lo", "hi"]
    )
    assert want["lo"].tolist() == [0.0, 0.0, 0.0]  # torch: lost at x = 0


def test_clip_with_number_bounds_is_relu6(tmp_path):
    mod = build("inputs:\n  x: [N]\ngraph:\n  y: sum(clip(x, 0, 6))\n", tmp_path, "relu6")
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0])
    value, grads = mod.value_and_grad(x)
    _, want = torch_grads(lambda x: torch.nn.functional.relu6(x), {"x": x}, ["x"])
    assert value == 15.0
    # torch's relu6 (a hardtanh) passes the gradient strictly inside (0, 6); clamp and clip include
    # the bounds: the two conventions differ exactly there
    assert grads.x.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0] and want["x"].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    _, clamp = torch_grads(lambda x: torch.clamp(x, 0, 6), {"x": x}, ["x"])
    assert grads.x.tolist() == clamp["x"].tolist()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tensor_exponent_matches_torch_pow(dtype, tmp_path):
    mod = build(
        "inputs:\n  a: [N, D]\n  b: [D]\n  w: [N, D]\ngraph:\n  y: a ** b + 2 ** b\n  loss: sum(y * w)\n",
        tmp_path,
        "tensor_pow",
    )
    rng = np.random.default_rng(7)
    a = rng.uniform(0.2, 3.0, (3, 4)).astype(dtype)
    b = rng.uniform(-2.0, 2.5, 4).astype(dtype)
    w = rng.standard_normal((3, 4)).astype(dtype)
    value, grads = mod.value_and_grad(a, b, w)
    want_y, want = torch_grads(lambda a, b, w: (a**b + 2**b) * w, dict(a=a, b=b, w=w), ["a", "b", "w"])
    close(np.asarray(value), np.asarray(want_y.sum(), dtype), dtype)
    for k in ("a", "b", "w"):
        close(getattr(grads, k), want[k], dtype)


def _bert_ffn_torch(x, target, W1, b1, W2, b2, gamma, beta):
    h = torch.nn.functional.gelu(x @ W1 + b1)
    r = x + h @ W2 + b2
    out = torch.nn.functional.layer_norm(r, (r.shape[-1],), gamma, beta, eps=1e-12)
    return torch.mean((out - target) ** 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bert_ffn_block_matches_torch_autograd(dtype):
    mod = load_generated("bert_ffn")
    rng = np.random.default_rng(11)
    B, T, D, F = 2, 5, 8, 32  # BERT's 4x expansion
    args = dict(
        x=rng.standard_normal((B, T, D)),
        target=rng.standard_normal((B, T, D)),
        W1=rng.standard_normal((D, F)) / np.sqrt(D),
        b1=0.1 * rng.standard_normal(F),
        W2=rng.standard_normal((F, D)) / np.sqrt(F),
        b2=0.1 * rng.standard_normal(D),
        gamma=1 + 0.1 * rng.standard_normal(D),
        beta=0.1 * rng.standard_normal(D),
    )
    args = {k: v.astype(dtype) for k, v in args.items()}
    loss, grads = mod.value_and_grad(**args)
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in args.items()}
    want = _bert_ffn_torch(**ts)
    want.backward()
    close(np.asarray(loss), np.asarray(want.detach().numpy()), dtype)
    for k in args:
        close(getattr(grads, k), ts[k].grad.numpy(), dtype)
    # the other derivative kinds of the spec agree with torch too: a Hessian-vector product
    if dtype == np.float64:
        v = {k: rng.standard_normal(a.shape) for k, a in args.items()}
        _, _, hv = mod.hvp(**args, v=[v[k] for k in args])
        params = tuple(torch.tensor(a) for a in args.values())
        _, want_hv = torch.autograd.functional.hvp(
            _bert_ffn_torch, params, tuple(torch.tensor(v[k]) for k in args)
        )
        for k, h in zip(args, want_hv):
            close(getattr(hv, k), h.numpy(), dtype)
