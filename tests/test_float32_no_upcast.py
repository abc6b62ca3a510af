"""A float32 run of every spec's generated module creates no float64 array along the way.

The generated functions are traced line by line (sys.settrace) and every local NumPy array is checked
at every line, so a named temporary that silently upcast to float64 is caught where it is made.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from gradgen.pipeline import build_text

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def _load(spec: Path, folder: Path):
    """Build the spec into a temp folder and import its generated test module (which loads the module)."""
    built = build_text(str(spec.relative_to(ROOT)), spec.read_text())
    for name, content in built.files:
        (folder / name).write_text(content)
    test_path = folder / built.files[1][0]
    module_spec = importlib.util.spec_from_file_location(f"gradgen_f32_{built.name}", test_path)
    tmod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(tmod)
    return vars(tmod.m), tmod.make_inputs


def _trace_float64(fn, *args):
    bad: list[str] = []
    code = fn.__code__

    def local_trace(frame, event, arg):
        if event in ("line", "return"):
            for name, value in frame.f_locals.items():
                if isinstance(value, np.ndarray) and value.dtype == np.float64:
                    bad.append(f"line {frame.f_lineno}: {name}")
        return local_trace

    def global_trace(frame, event, arg):
        if frame.f_code is code or frame.f_code.co_name in ("_check_inputs",):
            return local_trace
        return None

    sys.settrace(global_trace)
    try:
        result = fn(*args)
    finally:
        sys.settrace(None)
    return result, bad


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_float32_run_makes_no_float64_arrays(spec, tmp_path):
    ns, make_inputs = _load(spec, tmp_path)
    inputs = make_inputs(0, np.float32)
    (out, cache), bad = _trace_float64(ns["forward"], *inputs.values())
    assert not bad, f"forward made float64 arrays: {bad}"
    dout = np.ones(np.shape(out), dtype=np.float32)
    _, bad = _trace_float64(ns["backward"], dout, cache)
    assert not bad, f"backward made float64 arrays: {bad}"
    if "value_and_grad" in ns:
        _, bad = _trace_float64(ns["value_and_grad"], *inputs.values())
        assert not bad, f"value_and_grad made float64 arrays: {bad}"


def test_the_tracer_sees_an_upcast():
    """The check itself can fail: a function that upcasts is caught."""

    def upcast(x):
        y = x * np.float64(2.0)
        return y

    _, bad = _trace_float64(upcast, np.ones(3, dtype=np.float32))
    assert bad and "y" in bad[0]
