"""Broken specs, one per error category, each with the exact error text a user sees.

Every ``tests/cases/errors/<case>.yaml`` is built with ``gradgen build <case>.yaml --out <tmp>`` (through
typer's CliRunner, from the repository root, so paths print as ``tests/cases/errors/<case>.yaml``).  The run
must exit 2, print exactly the lines of ``<case>.expected`` on stderr (``PATH:LINE:COL: error: MESSAGE``),
print no Python traceback, and write nothing.

Snapshot update: after a deliberate change to a message or a place, rewrite the ``.expected`` files with

    GRADGEN_UPDATE_CASES=1 python -m pytest -q tests/test_error_cases.py

and review the diff of ``tests/cases/errors/*.expected`` before committing.  A new case is a new
``<case>.yaml``; the same command writes its ``.expected``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradgen.cli import app

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases" / "errors"
UPDATE = os.environ.get("GRADGEN_UPDATE_CASES") == "1"

VALID = "inputs:\n  x: [N, D]\n  W: [D, H]\ngraph:\n  z: sum(x @ W)\n"


def _cases() -> list[str]:
    return sorted(p.stem for p in CASES.glob("*.yaml"))


def _build(args: list[str], out: Path):
    """Run ``gradgen build ARGS --out OUT`` from the repository root; return the click result."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return CliRunner().invoke(app, ["build", *args, "--out", str(out)])
    finally:
        os.chdir(cwd)


def _written(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []


def test_there_are_cases():
    assert len(_cases()) >= 35


@pytest.mark.parametrize("case", _cases())
def test_error_case(case: str, tmp_path: Path):
    spec = f"tests/cases/errors/{case}.yaml"
    expected_file = CASES / f"{case}.expected"
    out = tmp_path / "out"
    result = _build([spec], out)

    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert _written(out) == []
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines, "an invalid spec must say why"
    for line in lines:
        assert line.startswith(f"{spec}:"), line
        assert ": error: " in line or ": warning: " in line, line
    if UPDATE:
        expected_file.write_text(result.stderr, encoding="utf-8")
    assert expected_file.exists(), f"no {expected_file.name}; run with GRADGEN_UPDATE_CASES=1 to write it"
    assert result.stderr == expected_file.read_text(encoding="utf-8")


def test_every_expected_file_has_its_case():
    stale = sorted(p.name for p in CASES.glob("*.expected") if not (CASES / f"{p.stem}.yaml").exists())
    assert stale == []


def test_two_specs_writing_one_module_name_is_an_error(tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "first.yaml").write_text("name: model\n" + VALID, encoding="utf-8")
    (specs / "second.yaml").write_text("name: model\n" + VALID, encoding="utf-8")
    out = tmp_path / "out"
    result = _build([str(specs)], out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "model" in result.stderr and ": error: " in result.stderr
    assert _written(out) == []


def test_a_valid_and_an_invalid_spec_write_nothing(tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "good.yaml").write_text(VALID, encoding="utf-8")
    (specs / "bad.yaml").write_text(VALID.replace("W: [D, H]", "W: [H, D]"), encoding="utf-8")
    out = tmp_path / "out"
    result = _build([str(specs)], out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (
        f"{specs / 'bad.yaml'}:5:12: error: matmul inner dims differ: D (x, line 2) vs H (W, line 3)"
        in result.stderr
    )
    assert _written(out) == []
    # the valid spec alone builds
    assert _build([str(specs / "good.yaml")], out).exit_code == 0
    assert _written(out) == ["good.py", "test_good.py"]


def test_a_missing_path_is_an_error(tmp_path: Path):
    out = tmp_path / "out"
    result = _build([str(tmp_path / "nowhere.yaml")], out)
    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path / 'nowhere.yaml'}:1:1: error: no such file or folder\n"
    assert _written(out) == []
