"""A wrt input that reaches the output only through masks or int results has a gradient of exactly 0:
the build warns at the input, and the generated tests check for exact zeros instead of failing as if
the finite-difference check were vacuous."""

from __future__ import annotations

import re
import subprocess
import sys

from gradgen.pipeline import build_text

SPEC = """name: zg
inputs:
  x: [N, D]
  y: [N, D]
graph:
  z: where(x > 0, y, 0.0)
  loss: sum(square(z))
"""


def test_warns_at_the_input_and_names_it():
    built = build_text("zg.yaml", SPEC)
    (w,) = built.warnings
    assert (w.place.line, w.place.col) == (3, 3)
    assert "the gradient w.r.t. 'x' is 0 everywhere" in w.message


def test_no_warning_when_a_float_path_exists():
    spec = SPEC.replace("where(x > 0, y, 0.0)", "where(x > 0, y * x, 0.0)")
    assert build_text("zg.yaml", spec).warnings == ()


def test_generated_tests_pass_and_catch_a_nonzero_gradient(tmp_path):
    files = dict(build_text("zg.yaml", SPEC).files)
    assert 'CONSTANT = ("x",)' in files["test_zg.py"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_zg.py"]
    assert subprocess.run(run, cwd=tmp_path, capture_output=True).returncode == 0
    # a module whose dx is not exactly 0 must fail the generated tests
    broken = re.sub(r"(\bdx = |Gradients\(x=)np\.zeros\(", r"\g<1>1e-300 + np.zeros(", files["zg.py"])
    assert broken != files["zg.py"]
    (tmp_path / "zg.py").write_text(broken)
    assert subprocess.run(run, cwd=tmp_path, capture_output=True).returncode != 0


CANCELS = """name: zc
inputs:
  x: [N, D]
  w: [D]
graph:
  loss: sum(x - x) + sum(relu(-abs(x))) + sum(w * w)
"""


def test_an_input_the_objective_does_not_depend_on_passes_and_a_step_it_hides_fails(tmp_path):
    """x - x: no mask, no int, yet a gradient of exactly 0. The generated tests accept it because the
    objective is the same at another draw of x; a module whose forward does depend on x through a
    step (flat almost everywhere, so differences see 0 on every draw) fails them, with the reason."""
    files = dict(build_text("zc.yaml", CANCELS).files)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_zc.py"]
    ok = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-2000:]
    module = files["zc.py"]
    head, sep, tail = module.partition("\n    return loss, ")
    assert sep, "forward's return line"
    stepped = head + "\n    loss = loss + np.floor(10 * x.sum())" + sep + tail
    (tmp_path / "zc.py").write_text(stepped)
    bad = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "yet the objective depends on x" in bad.stdout
