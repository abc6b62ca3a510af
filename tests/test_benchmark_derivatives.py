"""The hand-written jvp / hvp references of benchmarks/reference_derivatives.py are right (central
differences of a plain NumPy forward pass, written here), and agree with the generated functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import reference as R  # noqa: E402
from benchmarks import reference_derivatives as RD  # noqa: E402
from gradgen.pipeline import build_text  # noqa: E402

SIZES = {"mlp_tanh": dict(N=5, D=4, H=6, C=3), "attention_hvp": dict(B=2, T=3, D=5, K=4)}
SPECS = {
    "mlp_tanh": ROOT / "specs" / "mlp_tanh.yaml",
    "attention_hvp": ROOT / "benchmarks" / "specs" / "attention_hvp.yaml",
}


def _loss(workload, args):
    if workload == "mlp_tanh":
        x, y, W1, b1, W2, b2 = args
        z = np.tanh(x @ W1 + b1) @ W2 + b2
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))
    x, Wq, Wk, Wv, Wo = args
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    s = q @ k.transpose(0, 2, 1) / 8.0
    a = np.exp(s - s.max(axis=-1, keepdims=True))
    a /= a.sum(axis=-1, keepdims=True)
    return float(np.mean(((a @ v) @ Wo - x) ** 2))


def _moved(workload, args, direction, t):
    spec = RD.WORKLOADS[workload]
    out = list(args)
    for name, d in zip(spec["wrt"], direction):
        k = spec["inputs"].index(name)
        out[k] = args[k] + t * d
    return out


def _generated(workload):
    built = build_text(str(SPECS[workload]), SPECS[workload].read_text())
    spec = importlib.util.spec_from_loader(f"bench_{workload}", loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(dict(built.files)[f"{built.name}.py"], mod.__dict__)
    return mod


@pytest.mark.parametrize("workload", list(RD.WORKLOADS))
def test_references_match_central_differences_and_the_generated_functions(workload):
    args = R.make_inputs(RD.WORKLOADS[workload]["base"], SIZES[workload], np.float64, seed=3)
    v = RD.directions(workload, args, seed=4)
    eps = 1e-6
    loss, loss_dot = RD.WORKLOADS[workload]["jvp"](*[a.copy() for a in args], v)
    assert loss == pytest.approx(_loss(workload, args), rel=1e-12)
    numeric = (
        _loss(workload, _moved(workload, args, v, eps)) - _loss(workload, _moved(workload, args, v, -eps))
    ) / (2 * eps)
    assert loss_dot == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    loss_h, grads, hv = RD.WORKLOADS[workload]["hvp"](*[a.copy() for a in args], v)
    m = _generated(workload)
    value, g_grads, g_hv = m.hvp(*args, v)
    _, g_dot = m.jvp(*args, v)
    assert float(g_dot) == pytest.approx(float(loss_dot), rel=1e-10)
    np.testing.assert_allclose(value, loss_h, rtol=1e-12)
    for a, b in zip(grads, g_grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # hv against central differences of the reference gradient
    up = RD.WORKLOADS[workload]["hvp"](*_moved(workload, args, v, eps), v)[1]
    down = RD.WORKLOADS[workload]["hvp"](*_moved(workload, args, v, -eps), v)[1]
    for a, b, u, d in zip(hv, g_hv, up, down):
        np.testing.assert_allclose(a, (u - d) / (2 * eps), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
