"""Static indexing, split and stack against torch autograd (CPU, float64 and float32).

- ``specs/lstm_fused.yaml`` against ``torch.nn.LSTMCell`` (the same gate order i, f, g, o; its two
  weights are the transposes of W and U, its input bias is b and its hidden bias 0);
- ``specs/transformer2.yaml`` (fused Wqkv sliced into q, k, v) against the same two layers written
  with torch ops and its own slices;
- a spec of every kind of index (ints, negative bounds, dims as bounds, steps, None, ...), split by
  sizes and stack, built on the fly, against the same indexing in torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gradgen.pipeline import build_text

torch = pytest.importorskip("torch")

GENERATED = Path(__file__).resolve().parent.parent / "generated"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gradgen_torch_{name}", GENERATED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_text(text: str, tmp_path: Path, name: str):
    files = dict(build_text(f"{name}.yaml", text).files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"gradgen_torch_tmp_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_grads(fn, inputs: dict[str, np.ndarray], wrt):
    ts = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in inputs.items()}
    out = fn(**ts)
    out.backward()
    return out.detach().numpy(), {k: ts[k].grad.numpy() for k in wrt}


def assert_matches(m, fn, inputs, dtype):
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=1e-6)
    value, grads = m.value_and_grad(**inputs)
    ref_value, ref_grads = torch_grads(fn, inputs, grads._fields)
    np.testing.assert_allclose(value, ref_value, **tol)
    for name in grads._fields:
        g = getattr(grads, name)
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, ref_grads[name], err_msg=name, **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_fused_matches_torch_lstm_cell(dtype):
    m = load("lstm_fused")
    rng = np.random.default_rng(0)
    N, D, H = 5, 3, 4
    inputs = {
        "x": rng.standard_normal((N, D)),
        "h": rng.standard_normal((N, H)),
        "c": rng.standard_normal((N, H)),
        "W": rng.standard_normal((D, 4 * H)),
        "U": rng.standard_normal((H, 4 * H)),
        "b": rng.standard_normal(4 * H),
        "target": rng.standard_normal((N, H)),
    }
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}

    def cell(x, h, c, W, U, b, target):
        lstm = torch.nn.LSTMCell(D, H, dtype=x.dtype)
        with torch.no_grad():
            lstm.bias_hh.zero_()
        h2, c2 = torch.func.functional_call(
            lstm, {"weight_ih": W.T, "weight_hh": U.T, "bias_ih": b, "bias_hh": lstm.bias_hh}, (x, (h, c))
        )
        return ((h2 - target) ** 2).mean() + 0.5 * (c2**2).mean()

    assert_matches(m, cell, inputs, dtype)


def _layernorm(x, g, b):
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    return g * xc / torch.sqrt((xc**2).mean(-1, keepdim=True) + 1e-5) + b


def _layer(x, norm_g, norm_b, Wqkv, Wo, mlp_g, mlp_b, Wup, Wdown):
    B, T, E = x.shape
    H, Dh, _ = Wo.shape
    qkv = (_layernorm(x, norm_g, norm_b) / E**0.5) @ Wqkv
    q, k, v = (qkv[..., j * E : (j + 1) * E].reshape(B, T, H, Dh).transpose(1, 2) for j in range(3))
    weights = torch.softmax(q @ k.transpose(-1, -2) / Dh**0.5, dim=-1)
    a = x + torch.einsum("bhtd,hde->bte", weights @ v, Wo) / E**0.5
    up = torch.relu(_layernorm(a, mlp_g, mlp_b) @ Wup)
    return a + up @ Wdown / Wup.shape[1] ** 0.5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transformer2_with_fused_qkv_matches_torch(dtype):
    m = load("transformer2")
    rng = np.random.default_rng(1)
    B, T, H, Dh, F = 2, 3, 2, 4, 5
    E = H * Dh
    inputs = {"x": rng.standard_normal((B, T, E)), "target": rng.standard_normal((B, T, E))}
    for j in (1, 2):
        inputs |= {
            f"norm{j}_g": 1 + 0.1 * rng.standard_normal(E),
            f"norm{j}_b": 0.1 * rng.standard_normal(E),
            f"Wqkv{j}": rng.standard_normal((E, 3 * E)),
            f"Wo{j}": rng.standard_normal((H, Dh, E)),
            f"mlp{j}_g": 1 + 0.1 * rng.standard_normal(E),
            f"mlp{j}_b": 0.1 * rng.standard_normal(E),
            f"Wup{j}": rng.standard_normal((E, F)),
            f"Wdown{j}": rng.standard_normal((F, E)),
        }
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    names = ("norm_g", "norm_b", "Wqkv", "Wo", "mlp_g", "mlp_b", "Wup", "Wdown")

    def model(x, target, **p):
        h = x
        for j in (1, 2):
            h = _layer(
                h, *(p[f"{n[:-2]}{j}_{n[-1]}" if n.endswith(("_g", "_b")) else f"{n}{j}"] for n in names)
            )
        return ((h - target) ** 2).mean()

    assert_matches(m, model, inputs, dtype)


EVERY_INDEX = """
inputs:
  x: [N, D]
  z: [N, 3*K]
  y: [N, 2*M]
  k: [K]
  m: [M]
graph:
  first: x[:, 0]
  last_rows: x[-1]
  tail: x[..., -K:]
  head: x[:, :K]
  odd: y[None, :, 1::2]
  mid: z[1:-1, K:2*K]
  p, q: split(z, [K, 2*K], axis=1)
  s: stack((first, last_rows[0] * first), axis=1)
  loss: >
    sum(first * first) + sum(tanh(head) * tail) + sum(exp(odd)) + sum(last_rows * x[0])
    + sum(s * s[:, 1:]) + sum(mid * p[1:-1]) + sum(square(q[:, ::2]))
wrt: [x, z, y]
"""


def every_index_torch(x, z, y, k, m):
    K = k.shape[0]
    first = x[:, 0]
    last_rows = x[-1]
    tail = x[..., -K:]
    head = x[:, :K]
    odd = y[None, :, 1::2]
    mid = z[1:-1, K : 2 * K]
    p, q = torch.split(z, [K, 2 * K], dim=1)
    s = torch.stack((first, last_rows[0] * first), dim=1)
    return (
        (first * first).sum()
        + (torch.tanh(head) * tail).sum()
        + torch.exp(odd).sum()
        + (last_rows * x[0]).sum()
        + (s * s[:, 1:]).sum()
        + (mid * p[1:-1]).sum()
        + (q[:, ::2] ** 2).sum()
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_kind_of_index_matches_torch(dtype, tmp_path):
    m = from_text(EVERY_INDEX, tmp_path, "every_index")
    rng = np.random.default_rng(2)
    N, D, K, M = 4, 6, 3, 5
    inputs = {
        "x": rng.standard_normal((N, D)),
        "z": rng.standard_normal((N, 3 * K)),
        "y": rng.standard_normal((N, 2 * M)),
        "k": rng.standard_normal(K),
        "m": rng.standard_normal(M),
    }
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    assert_matches(m, every_index_torch, inputs, dtype)
    _, cache = m.forward(**inputs)
    grads = m.backward(np.asarray(2.0, dtype), cache)
    _, ref = torch_grads(lambda **t: 2 * every_index_torch(**t), inputs, ("x", "z", "y"))
    for name in ("x", "z", "y"):
        np.testing.assert_allclose(getattr(grads, name), ref[name], rtol=2e-4, atol=1e-5)


def test_a_slice_longer_than_its_axis_is_refused_when_the_module_runs(tmp_path):
    m = from_text(EVERY_INDEX, tmp_path, "every_index_range")
    rng = np.random.default_rng(3)
    inputs = {
        "x": rng.standard_normal((4, 2)),  # K = 3 > D = 2: x[..., -K:] and x[:, :K] do not fit
        "z": rng.standard_normal((4, 9)),
        "y": rng.standard_normal((4, 10)),
        "k": rng.standard_normal(3),
        "m": rng.standard_normal(5),
    }
    with pytest.raises(ValueError, match=r"tail: the index \[\.\.\., -K:\] is out of range: it needs K <= D"):
        m.forward(**inputs)
