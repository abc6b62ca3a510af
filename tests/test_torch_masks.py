"""Masks against torch autograd: comparisons, & | ~, where and bool inputs (gradgen/ops_masks.py).

The shipped causal self-attention (specs/causal_attention.yaml) and small specs built here are run in
float64 and float32 and compared, value and every gradient, with the same computation written in torch
(torch.where, torch.tril, masked scores filled with -1e9), whose autograd is the oracle.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gradgen.fmt import black_format  # noqa: E402
from gradgen.pipeline import plan_text  # noqa: E402
from gradgen.render import render_module  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _load_generated(name: str):
    spec = importlib.util.spec_from_file_location(f"torch_masks_{name}", ROOT / "generated" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(text: str) -> dict:
    plan, _ = plan_text("masks.yaml", text)
    ns: dict = {}
    exec(compile(black_format(render_module(plan)), "masks.py", "exec"), ns)
    return ns


def _torch_grads(fn, inputs: dict, wrt: list[str]):
    """fn's value and its gradients w.r.t. ``wrt``, by torch autograd, as NumPy arrays."""
    tensors = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in inputs.items()}
    loss = fn(**tensors)
    loss.backward()
    return loss.detach().numpy(), {k: tensors[k].grad.numpy() for k in wrt}


def _compare(ours, theirs, rtol, atol):
    value, grads = ours
    t_value, t_grads = theirs
    np.testing.assert_allclose(value, t_value, rtol=rtol, atol=atol)
    for name, g in t_grads.items():
        got = getattr(grads, name)
        assert got.dtype == g.dtype, (name, got.dtype, g.dtype)
        np.testing.assert_allclose(got, g, rtol=rtol, atol=atol, err_msg=name)


# --------------------------------------------------------------------------------------------------
# specs/causal_attention.yaml

B, T, H, DH = 3, 7, 2, 4


def _attention_torch(x, mask, Wq, Wk, Wv, Wo, target):
    def heads(z):
        return z.reshape(B, T, H, DH).transpose(1, 2)  # [B, H, T, Dh]

    q, k, v = heads(x @ Wq), heads(x @ Wk), heads(x @ Wv)
    scores = (q @ k.transpose(-1, -2)) / DH**0.5
    scores = scores.masked_fill(~mask, -1e9)
    weights = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhtd,hde->bte", weights @ v, Wo)
    return torch.mean((out - target) ** 2)


def _attention_inputs(seed, dtype, mask):
    rng = np.random.default_rng(seed)
    D = H * DH
    inputs = {
        "x": rng.standard_normal((B, T, D)),
        "mask": mask,
        "Wq": rng.standard_normal((D, D)) / D**0.5,
        "Wk": rng.standard_normal((D, D)) / D**0.5,
        "Wv": rng.standard_normal((D, D)) / D**0.5,
        "Wo": rng.standard_normal((H, DH, D)) / D**0.5,
        "target": rng.standard_normal((B, T, D)),
    }
    return {k: v if v.dtype == bool else v.astype(dtype) for k, v in inputs.items()}


CAUSAL = np.tril(np.ones((T, T), dtype=bool))
RANDOM = np.random.default_rng(5).random((T, T)) < 0.6
EMPTY_ROW = CAUSAL.copy()
EMPTY_ROW[3] = False  # a position that may attend to nothing: torch and gradgen give its row uniform weights
MASKS = {"causal": CAUSAL, "random": RANDOM, "empty row": EMPTY_ROW}
WRT = ["x", "Wq", "Wk", "Wv", "Wo"]


@pytest.mark.parametrize("mask", MASKS.values(), ids=MASKS.keys())
@pytest.mark.parametrize(
    "dtype, rtol, atol", [(np.float64, 1e-10, 1e-12), (np.float32, 2e-4, 2e-6)], ids=["float64", "float32"]
)
def test_causal_attention_matches_torch(mask, dtype, rtol, atol):
    m = _load_generated("causal_attention")
    inputs = _attention_inputs(1, dtype, mask)
    theirs = _torch_grads(_attention_torch, inputs, WRT)
    _compare(m.value_and_grad(**inputs), theirs, rtol, atol)
    out, cache = m.forward(**inputs)
    _compare((out, m.backward(1.0, cache)), theirs, rtol, atol)


def test_causal_attention_reads_the_mask():
    """An all-True mask gives the unmasked attention, with torch's value: the mask is read, not
    assumed causal."""
    m = _load_generated("causal_attention")
    inputs = _attention_inputs(2, np.float64, CAUSAL)
    full = dict(inputs, mask=np.ones((T, T), dtype=bool))
    assert not np.isclose(m.forward(**full)[0], m.forward(**inputs)[0])
    _compare(m.value_and_grad(**full), _torch_grads(_attention_torch, full, WRT), 1e-10, 1e-12)


def test_causal_attention_never_differentiates_the_mask():
    source = (ROOT / "generated" / "causal_attention.py").read_text()
    assert "dmask" not in source
    assert "Gradients(x=dx, Wq=dWq, Wk=dWk, Wv=dWv, Wo=dWo)" in source


# --------------------------------------------------------------------------------------------------
# comparisons, & | ~ and where in small specs built here

SELECT = """
inputs:
  x: [N, D]
  z: [N, D]
  m: {shape: [D], dtype: bool}
  w: [D]
graph:
  keep: ((x > 0) & m) | ~(z <= 0.5)
  picked: where(keep, x * w, -1.0)
  other: where(z != x, picked, tanh(z))
  both: where(x >= z, picked * z, other)
  loss: sum(square(both)) + sum(where(m, w, 0.5 * w))
"""


def _select_torch(x, z, m, w):
    keep = ((x > 0) & m) | ~(z <= 0.5)
    picked = torch.where(keep, x * w, torch.tensor(-1.0, dtype=x.dtype))
    other = torch.where(z != x, picked, torch.tanh(z))
    both = torch.where(x >= z, picked * z, other)
    return torch.sum(both**2) + torch.sum(torch.where(m, w, 0.5 * w))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["float64", "float32"])
def test_comparisons_and_where_match_torch(dtype, rtol):
    ns = _build(SELECT)
    rng = np.random.default_rng(3)
    inputs = {
        "x": rng.standard_normal((5, 6)).astype(dtype),
        "z": rng.standard_normal((5, 6)).astype(dtype),
        "m": np.array([True, False, True, True, False, True]),
        "w": rng.standard_normal(6).astype(dtype),
    }
    inputs["z"][0, :3] = inputs["x"][0, :3]  # ties: z == x and x >= z hold exactly there
    theirs = _torch_grads(_select_torch, inputs, ["x", "z", "w"])
    _compare(ns["value_and_grad"](**inputs), theirs, rtol, rtol)


BROADCAST = """
inputs:
  x: [N, D]
  b: [D]
  m: {shape: [N, 1], dtype: bool}
graph:
  y: where(m, x, b)
  loss: sum(y * y * x)
"""


def test_where_broadcast_operands_get_summed_cotangents():
    ns = _build(BROADCAST)
    rng = np.random.default_rng(4)
    inputs = {"x": rng.standard_normal((4, 3)), "b": rng.standard_normal(3), "m": rng.random((4, 1)) < 0.5}
    inputs["m"][0] = True
    inputs["m"][1] = False

    def fn(x, b, m):
        y = torch.where(m, x, b)
        return torch.sum(y * y * x)

    _compare(ns["value_and_grad"](**inputs), _torch_grads(fn, inputs, ["x", "b"]), 1e-12, 1e-12)
