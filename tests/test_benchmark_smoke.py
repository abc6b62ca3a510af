"""Smoke test of the benchmark runner (issue 4): it runs on tiny sizes. No test asserts a time.

Meant to live in tests/; it finds the repository root from its own location (one level up from the
folder holding this file, whether that is benchmarks/ or tests/).
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_runs_on_tiny_sizes():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--no-build-scaling", "--peers", "none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "workload" in out and "gen/ref" in out and "gen/floor" in out, out  # the table header
    assert "machine:" in out, out
    for workload in ("mlp", "logistic_regression", "attention"):
        assert workload in out, out
    assert "input checks:" in out and "ranges/step" in out, out  # the run-time check cost table


def test_derivative_benchmark_runs_on_tiny_sizes():
    """benchmarks.derivatives: jvp and hvp against the hand-written references (checked, then timed),
    jacobian and hessian (peers off here: they are optional)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.derivatives", "--tiny", "--peers", "none", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "jvp/fwd" in out and "hvp/vag" in out, out
    for case in (
        "mlp_tanh",
        "attention_hvp",
        "logreg_l2 hessian",
        "mlp_small_hessian hessian",
        "dense_layer",
    ):
        assert case in out, out
