"""The CNN benchmark's hand-written reference is right, and the benchmark runs (no test asserts a time).

The reference of benchmarks/reference_cnn.py is checked against torch autograd when torch is installed
(and against the generated module always: the benchmark itself refuses to time modules that disagree).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import reference_cnn as R  # noqa: E402

SIZES = dict(N=3, S=2, C1=4, C2=5, K=6)
ORDER = ("x", "y", "W1", "b1", "W2", "b2", "W3", "b3")


def test_reference_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    inputs = R.make_inputs(SIZES, np.float64, seed=3)
    loss, grads = R.small_cnn_value_and_grad(*(inputs[k] for k in ORDER))
    t = {k: torch.tensor(v) for k, v in inputs.items()}
    params = [t[k].requires_grad_() for k in ORDER[2:]]
    W1, b1, W2, b2, W3, b3 = params
    h1 = F.max_pool2d(F.relu(F.conv2d(t["x"], W1, padding=1) + b1), 2)
    h2 = F.max_pool2d(F.relu(F.conv2d(h1, W2, padding=1) + b2), 2)
    t_loss = F.cross_entropy(h2.flatten(1) @ W3.flatten(0, 2) + b3, t["y"])
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    for name, g, p in zip(ORDER[2:], grads, params):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_cnn_benchmark_runs_on_tiny_sizes():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cnn", "--tiny", "--peers", "none", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gen/hand" in proc.stdout and "float32" in proc.stdout and "float64" in proc.stdout, proc.stdout
