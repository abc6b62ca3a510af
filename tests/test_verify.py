"""gradgen.verify, the last line of defence: no generated file is written unless it passes.

The checks are tested on hand-written files (each forbidden construct is caught, the shipped files
pass), then end to end: a renderer made to leak spec text (monkeypatched) must make ``build_text`` raise
and ``gradgen build`` exit 3 with the internal-error message, writing nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gradgen.lower
import gradgen.render
from gradgen.cli import EXIT_INTERNAL, app
from gradgen.pipeline import UnsafeOutput, build_text
from gradgen.verify import check_import_effects, check_same_code, compiled

ROOT = Path(__file__).resolve().parent.parent
MODULE = (ROOT / "generated" / "mlp.py").read_text(encoding="utf-8")
TEST = (ROOT / "generated" / "test_mlp.py").read_text(encoding="utf-8")


def effects(text: str, is_test: bool = False) -> None:
    check_import_effects("f.py", compiled("f.py", text), "mlp", is_test)


def test_shipped_files_pass():
    effects(MODULE)
    effects(TEST, is_test=True)


@pytest.mark.parametrize(
    "text", ["x = (", "x = 1\x00", "def f():\nreturn 1", "return 1", "def f():\n    nonlocal q"]
)
def test_a_file_that_does_not_compile_fails(text):
    with pytest.raises(UnsafeOutput, match="does not compile"):
        compiled("f.py", text)


@pytest.mark.parametrize(
    "extra",
    [
        'print("hi")',
        "import os",
        "import numpy, os",
        "from os import system",
        "from . import sibling",
        "from typing import *",
        "x = 1",
        "__all__ = [name()]",
        "if True:\n    pass",
        "for i in ():\n    pass",
        "with open('f') as f:\n    pass",
        "try:\n    pass\nexcept Exception:\n    pass",
        "@decorate\ndef f():\n    pass",
        "def f(a=print()):\n    pass",
        "def f(*, a=print()):\n    pass",
        "def f(a: print()):\n    pass",
        "def f() -> print():\n    pass",
        "def f(a=2 ** 100000):\n    pass",
        "async def f():\n    pass",
        "class C(base()):\n    pass",
        "class C(NamedTuple, metaclass=M):\n    pass",
        "@decorate\nclass C:\n    pass",
        "class C:\n    x = f()",
        "class C:\n    x: int = f()",
        "class C:\n    x: f()",
        "class C:\n    print()",
        "class C:\n    def f(self, a=g()):\n        pass",
        "class C:\n    x = ().__class__",
    ],
)
def test_module_level_holds_only_definitions(extra):
    with pytest.raises(UnsafeOutput):
        effects(MODULE + "\n\n" + extra + "\n")


def test_test_file_may_hold_marks_fixtures_and_constants():
    effects(TEST + "\n\n@pytest.fixture\ndef rng():\n    return 1\n\nTOL = {'rtol': 1e-5}\n", is_test=True)
    with pytest.raises(UnsafeOutput, match="decorator"):
        effects(TEST + "\n\n@pytest.hookimpl\ndef f():\n    pass\n", is_test=True)
    with pytest.raises(UnsafeOutput):
        effects(TEST + "\n\nSIZES = dict(N=3)\n", is_test=True)


def test_test_file_loads_its_own_module_and_nothing_else():
    with pytest.raises(UnsafeOutput, match="load the module under test are missing"):
        effects(TEST.replace("_spec.loader.exec_module(m)", ""), is_test=True)
    with pytest.raises(UnsafeOutput):
        effects(TEST.replace('with_name("mlp.py")', 'with_name("other.py")'), is_test=True)
    with pytest.raises(UnsafeOutput):
        effects(TEST + "\n_spec.loader.exec_module(m)\n", is_test=True)  # twice


def tree(text: str) -> ast.Module:
    return compiled("f.py", text)


def test_same_code_sets_docstrings_and_comments_aside():
    a = '"""one"""\n\n\ndef f(x):\n    """two"""\n    return x  # three\n'
    b = '"""uno"""\n\n\ndef f(x):\n    """dos"""\n    # tres\n    return (x)\n'
    check_same_code("f.py", tree(a), tree(b))


@pytest.mark.parametrize(
    "other",
    [
        '"""one"""\n\n\ndef f(x):\n    """two"""\n    "three"\n    return x\n',  # a string after the docstring
        '"""one"""\n\n\ndef f(x):\n    """two"""\n    x\n    return x\n',  # a bare expression
        '"""one"""\n\n\ndef f(x):\n    """two"""\n    return 1\n',
        '"""one"""\n\n\ndef f(x):\n    """two"""\n    return x\n\n\nprint()\n',
        '"""one"""\n\n\ndef f(y):\n    """two"""\n    return x\n',
    ],
)
def test_same_code_sees_any_other_difference(other):
    base = '"""one"""\n\n\ndef f(x):\n    """two"""\n    return x\n'
    with pytest.raises(UnsafeOutput, match="changed the code"):
        check_same_code("f.py", tree(base), tree(other))
    for a, b in [("1", "1.0"), ("1", "True"), ("'a'", "'b'"), ("(1, 2)", "(1, 2, 3)")]:
        with pytest.raises(UnsafeOutput):
            check_same_code("f.py", tree(f"x = {a}\n"), tree(f"x = {b}\n"))


# -- a leaking renderer -----------------------------------------------------------------------------------

SPEC = """name: leak
description: {description}
inputs: {{x: [N, D], W: [D, K]}}
graph:
  z: {z}
  loss: sum(tanh(z))
"""
CONTINUED = '"x @ W + \\\\\\n    x @ W.T.T"'  # a backslash continuation: its second line is a statement


def leak_comments(monkeypatch):
    """The escaping undone and the source echoed as written: what gradgen did before issue 7."""
    monkeypatch.setattr(gradgen.render, "one_line", lambda text, limit=0: text)
    monkeypatch.setattr(gradgen.lower, "echo", lambda node, source: source)


def test_a_leak_into_a_function_body_is_caught(monkeypatch):
    build_text("leak.yaml", SPEC.format(description="fine", z=CONTINUED))  # fine before the leak
    leak_comments(monkeypatch)
    with pytest.raises(UnsafeOutput, match=r"leak\.py: spec text changed the code"):
        build_text("leak.yaml", SPEC.format(description="fine", z=CONTINUED))


def test_a_leak_to_module_level_is_caught(monkeypatch):
    leak_comments(monkeypatch)
    description = '"x\\n\\"\\"\\"\\nopen(\\"pwned\\", \\"w\\")\\n\\"\\"\\""'
    with pytest.raises(UnsafeOutput, match=r"leak\.py, line 4: module-level Expr statement"):
        build_text("leak.yaml", SPEC.format(description=description, z="x @ W"))


def test_a_leak_into_line_one_of_the_test_file_is_caught(monkeypatch):
    leak_comments(monkeypatch)
    with pytest.raises(UnsafeOutput):
        build_text('leak\nopen("pwned", "w")\n#.yaml', SPEC.format(description="fine", z="x @ W"))


def test_cli_exits_3_and_writes_nothing(monkeypatch, tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a_fine.yaml").write_text(SPEC.format(description="fine", z="x @ W").replace("leak", "fine"))
    (specs / "b_leak.yaml").write_text(SPEC.format(description="fine", z=CONTINUED))
    leak_comments(monkeypatch)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["build", str(specs), "--out", str(out)])
    assert result.exit_code == EXIT_INTERNAL
    assert "b_leak.yaml:1:1: error: internal error in gradgen while building this spec (UnsafeOutput:" in (
        result.output
    )
    assert not out.exists()  # not even the fine spec's files
