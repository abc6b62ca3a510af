"""Mutation harness for the generated tests: does `test_<name>.py` fail when its module is wrong?

A mutant is a deliberately wrong version of a generated module, made in one of two ways:

- a *source edit* of the generated module, for mistakes a planner could emit: a `dout` that is not cast
  to the cache's dtype, labels picked in reverse order, a dropped accumulation term, a scatter-add that
  drops repeated indices, a kink convention flipped;
- a *wrapper* module that loads the real one and changes what its functions return, for mistakes that
  show only in some runs: a float32-only 1.1x gradient or output, a float32 NaN, tiny gradient entries
  negated, zeroed or scaled, a square gradient transposed.

Each mutant is written next to an unchanged copy of the generated test file and pytest runs that file in
this process; the mutant is *killed* when the file fails.  The unmutated module must pass.

    python tests/mutants.py [--tests-from DIR] [SPEC ...]

prints a kill table for the given specs (default: the harness's specs); with ``--tests-from`` the test
files are taken from DIR instead (say, ones written by another gradgen version, to compare).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradgen.pipeline import build_text, plan_text

ROOT = Path(__file__).resolve().parents[1]
HARNESS_SPECS = [
    ROOT / "specs" / "mlp.yaml",  # int labels, relu
    ROOT / "specs" / "sce_int_labels.yaml",  # N = 3 labels
    ROOT / "specs" / "embedding_classifier.yaml",  # take (repeated indices), labels
    ROOT / "specs" / "multipath.yaml",  # accumulation over uses
    ROOT / "specs" / "features.yaml",  # maximum tie
    ROOT / "tests" / "cases" / "mutants" / "saturated.yaml",  # tiny gradients
    ROOT / "tests" / "cases" / "mutants" / "square.yaml",  # a square weight
    ROOT / "tests" / "cases" / "mutants" / "kinks.yaml",  # relu, abs, maximum, minimum kinks
    ROOT / "specs" / "lstm_fused.yaml",  # split: the gates' gradients written into one array
    ROOT / "tests" / "cases" / "mutants" / "masks.yaml",  # a bool input, comparisons, where
]


@dataclass(frozen=True)
class Built:
    name: str
    module: str  # the generated module's source
    test: str  # the generated test file's source
    wrt: tuple[str, ...]
    square: tuple[str, ...]  # wrt inputs of shape [D, D]
    scalar_output: bool


def build(spec: Path) -> Built:
    rel = spec.relative_to(ROOT).as_posix() if spec.is_relative_to(ROOT) else spec.name
    text = spec.read_text(encoding="utf-8")
    built = build_text(rel, text)
    plan, _ = plan_text(rel, text)
    (_, module), (_, test) = built.files
    shapes = {n: s for n, s, _, _ in plan.test_inputs}
    square = tuple(w for w in plan.wrt if len(shapes[w]) == 2 and shapes[w][0] == shapes[w][1])
    return Built(plan.name, module, test, plan.wrt, square, plan.scalar_output)


# ------------------------------------------------------------------------------------------------
# source edits


def _in_function(source: str, function: str, edit: Callable[[str], str]) -> str | None:
    """Apply ``edit`` to the body of one top-level function; None when it changes nothing."""
    start = source.find(f"\ndef {function}(")
    if start < 0:
        return None
    end = source.find("\ndef ", start + 1)
    end = len(source) if end < 0 else end
    body = source[start:end]
    new = edit(body)
    return None if new == body else source[:start] + new + source[end:]


def _lines_with(marker: str, old: str, new):
    """An edit that replaces the regex ``old`` by ``new`` on the lines that ``marker`` comments."""

    def edit(body: str) -> str:
        out, above = [], False
        for line in body.split("\n"):
            if line.lstrip().startswith("#"):  # a comment above its line, or above a run of lines
                above = marker in line
            else:
                own = "  # " in line  # a line with its own comment leaves the run
                if marker in line or (above and not own):
                    line = re.sub(old, new, line)
                above = above and not own
            out.append(line)
        return "\n".join(out)

    return edit


def _drop_accumulation(body: str) -> str:
    """Remove the first term added into a cotangent that already had one (notes section 3)."""
    lines = body.split("\n")
    for k, line in enumerate(lines):
        if "accumulated over uses" not in line:
            continue
        target = k if line.strip() and not line.strip().startswith("#") else k + 1
        stmt = lines[target]
        m = re.match(r"(\s*)(\w+) \+= ", stmt)
        if m:
            lines[target] = f"{m.group(1)}pass"
            return "\n".join(lines)
        m = re.match(r"(\s*)(\w+) = (\w+) \+ ", stmt)
        if m and m.group(2) == m.group(3):
            lines[target] = f"{m.group(1)}{m.group(2)} = {m.group(3)}"
            return "\n".join(lines)
        # the sum computed into its first term's buffer under a name of its own: dx = np.add(dh, t, out=dh)
        m = re.match(r"(\s*)(\w+) = np\.add\((\w+), .*, out=(\w+)\)(\s*#.*)?$", stmt)
        if m and m.group(3) == m.group(4):
            lines[target] = f"{m.group(1)}{m.group(2)} = {m.group(3)}"
            return "\n".join(lines)
    return body


def source_mutant(function: str, edit) -> Callable[[Built], dict[str, str] | None]:
    def make(b: Built):
        new = _in_function(b.module, function, edit)
        return None if new is None else {f"{b.name}.py": new}

    return make


# ------------------------------------------------------------------------------------------------
# wrappers

WRAPPER = '''"""Mutant of {name}: {what}."""

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("_original_{name}", Path(__file__).with_name("_original_{name}.py"))
_m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_m)
Gradients = _m.Gradients


def __getattr__(attr):
    return getattr(_m, attr)


def _out(out):
    return out


def _grads(g, where):
    return g


{mutation}


def forward(*args, **kwargs):
    out, cache = _m.forward(*args, **kwargs)
    return _out(out), cache


def backward(dout, cache):
    return _grads(_m.backward(dout, cache), "backward")


def value_and_grad(*args, **kwargs):
    value, grads = _m.value_and_grad(*args, **kwargs)
    return _out(value), _grads(grads, "value_and_grad")
'''


def wrapper_mutant(what: str, mutation: str, field: Callable[[Built], str | None] = lambda b: b.wrt[-1]):
    """``mutation`` redefines ``_out(out)`` and/or ``_grads(g, where)``; ``{field}`` names a gradient."""

    def make(b: Built):
        f = field(b)
        if f is None:
            return None
        text = WRAPPER.format(name=b.name, what=what.format(field=f), mutation=mutation.format(field=f))
        return {f"{b.name}.py": text, f"_original_{b.name}.py": b.module}

    return make


def _float32(where: str) -> str:
    """A _grads that changes field {field} in float32 runs of the given functions."""
    return f"""
def _grads(g, where):
    x = getattr(g, "{{field}}")
    if where in {where} and x.dtype == np.float32:
        return g._replace({{field}}=CHANGE(x))
    return g
"""


def _tiny(change: str) -> str:
    """A _grads that changes every gradient entry below the old fixed atol (1e-7), in any dtype."""
    return f"""
def _grads(g, where):
    def change(x):
        x = np.array(x, copy=True)
        tiny = np.abs(x) < 1e-7
        x[tiny] = {change}
        return x

    return g._replace(**{{{{name: change(getattr(g, name)) for name in g._fields}}}})
"""


MUTANTS: dict[str, Callable[[Built], dict[str, str] | None]] = {
    "float32 gradient x 1.1": wrapper_mutant(
        "float32 d{field} x 1.1",
        _float32("('backward', 'value_and_grad')").replace("CHANGE(x)", "x * np.float32(1.1)"),
    ),
    "float32 value_and_grad gradient x 1.1": wrapper_mutant(
        "float32 value_and_grad d{field} x 1.1",
        _float32("('value_and_grad',)").replace("CHANGE(x)", "x * np.float32(1.1)"),
    ),
    "float32 gradient with a NaN": wrapper_mutant(
        "float32 d{field} with a NaN",
        _float32("('backward', 'value_and_grad')").replace(
            "CHANGE(x)", "np.where(np.arange(x.size).reshape(x.shape) == 0, np.float32(np.nan), x)"
        ),
    ),
    "float32 output x 1.1": wrapper_mutant(
        "float32 output x 1.1",
        "def _out(out):\n    return out * np.float32(1.1) if np.asarray(out).dtype == np.float32 else out\n",
    ),
    # backward's dout goes through _check_dout, which casts it to the forward pass's dtype
    "dout not cast (float64 leaks)": source_mutant(
        "_check_dout", _lines_with("return d.astype(dtype, copy=False)", r"\.astype\(dtype, copy=False\)", "")
    ),
    "labels reversed in backward": source_mutant(
        "backward", _lines_with("] -=", r"(np\.arange\(\w+\), )(\w+)\]", r"\1\2[::-1]]")
    ),
    "labels reversed in value_and_grad": source_mutant(
        "value_and_grad", _lines_with("] -=", r"(np\.arange\(\w+\), )(\w+)\]", r"\1\2[::-1]]")
    ),
    "tiny gradients negated": wrapper_mutant("tiny gradients negated", _tiny("-x[tiny]")),
    "tiny gradients zeroed": wrapper_mutant("tiny gradients zeroed", _tiny("0")),
    "tiny gradients x 1.1": wrapper_mutant("tiny gradients x 1.1", _tiny("1.1 * x[tiny]")),
    "square gradient transposed": wrapper_mutant(
        "d{field} transposed",
        "def _grads(g, where):\n    return g._replace({field}=g.{field}.T.copy())\n",
        field=lambda b: b.square[0] if b.square else None,
    ),
    "accumulation term dropped": source_mutant("backward", _drop_accumulation),
    "scatter-add drops repeated indices": source_mutant(
        "backward",
        _lines_with("np.add.at(", r"np\.add\.at\((\w+), (\w+), (.+)\)(\s*#.*)?$", r"\1[\2] += \3\4"),
    ),
    "relu'(0) = 1": source_mutant("backward", _lines_with("relu rule", r" > 0\b", " >= 0")),
    "abs'(0) = 1": source_mutant(
        "backward", _lines_with("abs rule", r"np\.sign\((\w+)\)", r"(np.sign(\1) + (\1 == 0))")
    ),
    "maximum ties go to b": source_mutant(
        "backward", _lines_with("maximum rule", r" (>=|<) ", lambda m: {">=": " > ", "<": " <= "}[m.group(1)])
    ),
    "minimum ties go to b": source_mutant(
        "backward", _lines_with("minimum rule", r" (<=|>) ", lambda m: {"<=": " < ", ">": " >= "}[m.group(1)])
    ),
    # the pieces of a split write their gradients into one zeros array (dz[:, H : 2 * H] += df)
    "a piece's gradient dropped": source_mutant(
        "backward", _lines_with("added at its slice", r"^(\s*)\w+\[.*\] \+= .*$", r"\1pass")
    ),
    "a piece's gradient added rows reversed": source_mutant(
        "backward", _lines_with("added at its slice", r"\] \+= (\w+)", r"] += \1[::-1]")
    ),
    "where's cotangent to the other side": source_mutant(
        "backward", _lines_with("where rule", r"np\.where\((\w+), ", r"np.where(~\1, ")
    ),
    "where's cotangent not masked": source_mutant(
        "backward", _lines_with("where rule", r"np\.where\(\w+, (\w+), 0\)", r"\1")
    ),
    "an input mask applied the other way round": source_mutant(
        "backward",
        _lines_with(
            "where rule",
            r"(\*=? )(~?)(\w+)(\s+#|$)",
            lambda m: m.group(1) + ("" if m.group(2) else "~") + m.group(3) + m.group(4),
        ),
    ),
    "mask ignored in forward": source_mutant(
        "forward", _lines_with("np.where(", r"np\.where\(\w+, (\w+), .+\)", r"\1")
    ),
    "a mask given as 0/1 numbers accepted": source_mutant(
        "_bool_array", _lines_with("expected a bool mask", r"raise ValueError\(.*\)", "pass")
    ),
}

# Where each spec-dependent mutant runs, and must apply (a change in the generated code that stops one
# from applying is an error, not a silent skip).  The float32 wrappers run on every spec.  Left out as
# equivalent: "dout not cast" on features and masks (their backward builds the cotangent with
# np.full(..., dtype=dtype)), and the tie of features' minimum(..., 1.5), which no input can force.
EXPECTED = {
    "dout not cast (float64 leaks)": [
        "mlp",
        "sce_int_labels",
        "embedding_classifier",
        "multipath",
        "saturated",
        "square",
        "kinks",
    ],
    "labels reversed in backward": ["mlp", "sce_int_labels", "embedding_classifier", "saturated"],
    "labels reversed in value_and_grad": ["mlp", "sce_int_labels", "embedding_classifier", "saturated"],
    "tiny gradients negated": ["saturated"],
    "tiny gradients zeroed": ["saturated"],
    "tiny gradients x 1.1": ["saturated"],
    "square gradient transposed": ["square"],
    "accumulation term dropped": ["multipath", "square", "kinks"],
    "scatter-add drops repeated indices": ["embedding_classifier"],
    "relu'(0) = 1": ["mlp", "kinks"],
    "abs'(0) = 1": ["kinks"],
    "maximum ties go to b": ["features", "kinks"],
    "minimum ties go to b": ["kinks"],
    "a piece's gradient dropped": ["lstm_fused"],
    "a piece's gradient added rows reversed": ["lstm_fused"],
    "where's cotangent to the other side": ["masks"],
    "where's cotangent not masked": ["masks"],
    "an input mask applied the other way round": ["masks"],
    "mask ignored in forward": ["masks"],
    "a mask given as 0/1 numbers accepted": ["masks"],
}


def mutants_for(b: Built) -> dict[str, dict[str, str]]:
    out = {}
    for label, make in MUTANTS.items():
        if label in EXPECTED and b.name not in EXPECTED[label]:
            continue
        files = make(b)
        if files is None:
            if label in EXPECTED:
                raise LookupError(
                    f"mutant {label!r} no longer applies to {b.name}: the generated code changed"
                )
            continue
        out[label] = files
    return out


# ------------------------------------------------------------------------------------------------
# running


class _Outcomes:
    """A pytest plugin: the first failure of each folder's test file; the rest of that file is skipped."""

    def __init__(self):
        self.failed: dict[str, str] = {}
        self.passed: set[str] = set()

    @staticmethod
    def _folder(nodeid: str) -> str:
        return nodeid.split("/", 1)[0]

    def pytest_collection_modifyitems(self, items):
        """The elementwise finite-difference checks last: the other tests are cheaper ways to fail."""
        items.sort(key=lambda item: "central_differences" in item.name)

    def pytest_runtest_setup(self, item):
        if self._folder(item.nodeid) in self.failed:
            pytest.skip("an earlier test of this mutant failed")

    def pytest_runtest_logreport(self, report):
        folder = self._folder(report.nodeid)
        if report.failed:
            self.failed.setdefault(folder, f"{report.nodeid}\n{report.longreprtext[-3000:]}")
        elif report.passed and report.when == "call":
            self.passed.add(folder)

    def pytest_collectreport(self, report):
        if report.failed:
            self.failed.setdefault(self._folder(report.nodeid), f"collection: {report.longreprtext[-3000:]}")


def run_session(root: Path) -> _Outcomes:
    """One quiet pytest session, in this process, over every test file below ``root``."""
    outcomes = _Outcomes()
    args = [str(root), "-q", "-p", "no:cacheprovider", "-W", "ignore", "--assert=plain"]
    args += ["--rootdir", str(root), "--import-mode=importlib"]
    before, autoload = set(sys.modules), os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the generated tests need no plugin
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = pytest.main(args, plugins=[outcomes])
    finally:
        if autoload is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = autoload
        for name in set(sys.modules) - before:  # the test modules of this session only
            if str(root) in str(getattr(sys.modules[name], "__file__", None) or ""):
                del sys.modules[name]
    if code not in (0, 1):
        raise RuntimeError(f"pytest exited with {code} on {root}")
    return outcomes


def _write(folder: Path, b: Built, files: dict[str, str], test_source: str) -> None:
    folder.mkdir(parents=True)
    (folder / f"{b.name}.py").write_text(b.module)
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / f"test_{b.name}.py").write_text(test_source)


def kill(b: Built, root: Path, test_source: str | None = None) -> tuple[str | None, dict[str, str | None]]:
    """Run the unmutated module and every mutant of ``b`` under its test file.

    Returns (the control's failure or None, {mutant: the failure that killed it, or None: survived}).
    """
    test_source = b.test if test_source is None else test_source
    mutants = mutants_for(b)
    _write(root / "control", b, {}, test_source)
    for k, files in enumerate(mutants.values()):
        _write(root / f"m{k:02d}", b, files, test_source)
    outcomes = run_session(root)
    killed = {label: outcomes.failed.get(f"m{k:02d}") for k, label in enumerate(mutants)}
    return outcomes.failed.get("control"), killed


def main(argv: list[str]) -> int:
    tests_from = None
    if argv[:1] == ["--tests-from"]:
        tests_from, argv = Path(argv[1]), argv[2:]
    specs = [Path(a).resolve() for a in argv] or HARNESS_SPECS
    total = killed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, spec in enumerate(specs):
            b = build(spec)
            test = (tests_from / f"test_{b.name}.py").read_text() if tests_from else None
            control, results = kill(b, Path(tmp) / f"s{k}", test)
            if control is not None:
                print(f"{b.name}: the unmutated module fails its tests:\n{control}")
                continue
            for label, failure in results.items():
                print(f"{b.name}: {label}".ljust(60) + ("killed" if failure else "SURVIVED"))
            total, killed = total + len(results), killed + sum(f is not None for f in results.values())
    print(f"killed {killed} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
