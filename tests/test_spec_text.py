"""Spec text never becomes code: regression tests for each path by which it once did.

Issue 7 found three: the description copied into the module docstring (a ``\"\"\"`` closed it), each graph
entry's source copied into a ``# name = source`` comment (its second line became a statement), and the
spec's path in line 1 of both files (a line break in the file name did the same).  Each test builds a
payload through the command line and checks what was written: it compiles, its code tokens (everything
but strings and comments) are those of the same spec with harmless text, importing it has no effect
but definitions, and the text reads back where it belongs.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradgen.cli import app
from gradgen.escape import MAX_CHARS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/text_safety.py, any import mode
from text_safety import code_tokens, import_fresh, yaml_quoted

PAYLOAD = 'open("pwned", "w")'


def spec(description: str | None = None, z: str = '"x @ W"', name: str = "m") -> str:
    lines = [f"name: {name}"]
    if description is not None:
        lines.append(f"description: {yaml_quoted(description)}")
    lines += ["inputs: {x: [N, D], W: [D, K]}", "graph:", f"  z: {z}", "  loss: sum(tanh(z))"]
    return "\n".join(lines) + "\n"


def build(folder: Path, specs: dict[str, str]) -> Path:
    """Write the specs into folder/specs, run ``gradgen build`` on that folder; return folder/out."""
    src, out = folder / "specs", folder / "out"
    src.mkdir(parents=True)
    for file_name, text in specs.items():
        (src / file_name).write_text(text, encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(folder)  # a payload that writes a relative file would write it here
    try:
        result = CliRunner().invoke(app, ["build", str(src), "--out", str(out)])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return out


def assert_safe(out: Path, baseline: Path, name: str = "m") -> object:
    """Both files compile, run the same code as the baseline's, and import without effect."""
    for file_name in (f"{name}.py", f"test_{name}.py"):
        text = (out / file_name).read_text(encoding="utf-8")
        compile(text, file_name, "exec")
        assert code_tokens(text) == code_tokens((baseline / file_name).read_text(encoding="utf-8"))
    module, problems = import_fresh(out / f"{name}.py")
    assert problems == []
    _, problems = import_fresh(out / f"test_{name}.py")
    assert problems == []
    assert not list(out.parent.rglob("pwned"))
    return module


@pytest.fixture
def baseline(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("baseline"), {"m.yaml": spec("harmless")})


def test_description_cannot_close_the_docstring(tmp_path, baseline):
    text = f'hi """ ; {PAYLOAD} ; """'
    module = assert_safe(build(tmp_path, {"m.yaml": spec(text)}), baseline)
    assert module.__doc__.splitlines()[0] == f"m: {text}"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("C:\\Users\\me", "C:\\Users\\me"),
        ("\\N{X} and \\x1 and \\u12", "\\N{X} and \\x1 and \\u12"),
        ("ends in a backslash \\", "ends in a backslash \\"),
        ('ends in a quote "', 'ends in a quote "'),
        ('""""""', '""""""'),
        ("NUL \x00 here", "NUL \\x00 here"),
        ("tab\tCR\rLF\nend", "tab\\tCR\\rLF\\nend"),
        (
            "separators \u2028 \u2029 \x85 \x0b \x0c \x1c",
            "separators \\u2028 \\u2029 \\x85 \\x0b \\x0c \\x1c",
        ),
        ("bidi \u202e override", "bidi \\u202e override"),
        ("non-ASCII stays: déjà vu, 勾配", "non-ASCII stays: déjà vu, 勾配"),
    ],
)
def test_description_reads_back_as_one_printable_line(tmp_path, baseline, text, shown):
    module = assert_safe(build(tmp_path, {"m.yaml": spec(text)}), baseline)
    first = module.__doc__.splitlines()[0]
    assert first == f"m: {shown}"
    assert first.isprintable()


def test_long_description_is_cut_with_an_ellipsis(tmp_path, baseline):
    module = assert_safe(build(tmp_path, {"m.yaml": spec("word " * 200)}), baseline)
    first = module.__doc__.splitlines()[0]
    assert first.endswith("...") and len(first) == len("m: ") + MAX_CHARS


ECHOES = [
    # (the expression as YAML, the one line that the comment shows)
    ('"x @ W + \\\\\\n    x @ W.T.T"', "x @ W + x @ W.T.T"),  # a backslash continuation
    ('"(x @ W\\n    + x @ W.T.T)"', "x @ W + x @ W.T.T"),  # a YAML \n escape inside parentheses
    ("|-\n    (x @ W\n        + x @ W.T.T)", "x @ W + x @ W.T.T"),  # a literal block
    (">-\n    x @ W\n    + x @ W.T.T", "x @ W + x @ W.T.T"),  # a folded block
    (
        f'"(x @ W  # ); {PAYLOAD.replace(chr(34), chr(39))}\\n    + x @ W.T.T)"',
        "x @ W + x @ W.T.T",
    ),  # a comment
    ('"x @ W + einsum(\\"ij,\\\\\\njk->ik\\", x, W)"', "x @ W + einsum('ij,jk->ik', x, W)"),  # in a string
]


@pytest.mark.parametrize("expr, echo", ECHOES)
def test_entry_is_echoed_from_its_parsed_form(tmp_path_factory, expr, echo):
    base = build(tmp_path_factory.mktemp("base"), {"m.yaml": spec(z=f'"{echo}"')})
    out = build(tmp_path_factory.mktemp("payload"), {"m.yaml": spec(z=expr)})
    assert_safe(out, base)
    text = (out / "m.py").read_text(encoding="utf-8")
    assert text == (base / "m.py").read_text(encoding="utf-8").replace(str(base.parent), str(out.parent))
    assert text.count(f"    # z = {echo}\n") == 2  # in backward and in value_and_grad


def _in_place_call(node: ast.AST) -> bool:
    """np.f(..., out=buf): an in-place update the planner writes as a statement of its own."""
    return isinstance(node, ast.Call) and any(k.arg == "out" for k in node.keywords)


def test_backward_holds_only_what_the_planner_emitted(tmp_path, baseline):
    """The confirmed attack: the continuation line of an expression ran as a statement of backward."""
    out = build(tmp_path, {"m.yaml": spec(z='"x @ W + \\\\\\n    x @ W.T.T"')})
    tree = ast.parse((out / "m.py").read_text(encoding="utf-8"))
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        bare = [s for s in fn.body[1:] if isinstance(s, ast.Expr) and not _in_place_call(s.value)]
        assert not bare, f"{fn.name} holds a bare expression statement: {ast.unparse(bare[0])}"


def test_literals_are_spelled_from_the_parse(tmp_path):
    out = build(tmp_path, {"m.yaml": spec(z='"x @ W * -(\\n  2  # two\\n) + 1e-5"')})
    text = (out / "m.py").read_text(encoding="utf-8")
    assert "# z = x @ W * -2 + 1e-05" not in text  # number literals keep their spelling
    assert text.count("    # z = x @ W * -2 + 1e-5\n") == 2
    assert "# two" not in text and "-(" not in text


@pytest.mark.parametrize("sep", ["\n", "\r", "\r\n"])
def test_file_name_with_a_line_break_stays_in_line_one(tmp_path, baseline, sep):
    """``a<LF>open("x", "w")<LF>#.yaml`` in a folder given to ``gradgen build`` (and CR, CRLF)."""
    file_name = f"a{sep}{PAYLOAD}{sep}#.yaml"
    out = build(tmp_path, {file_name: spec("harmless")})
    assert_safe(out, baseline)
    for f in ("m.py", "test_m.py"):
        raw = (out / f).read_bytes()
        first = raw.split(b"\n", 1)[0]
        assert b"\r" not in raw and first.startswith(b"# Generated by gradgen ")
        assert PAYLOAD.replace('"', '\\"').encode() in first  # shown, escaped, inside the comment


def test_shipped_specs_keep_their_comments():
    """Escaping changes nothing for ordinary text: no shipped module shows an escape."""
    root = Path(__file__).resolve().parent.parent / "generated"
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "\\\\" not in text and '\\"' not in text, path.name


def test_file_name_with_undecodable_bytes(tmp_path):
    """Bytes that are not UTF-8 reach Python as lone surrogates: the spec is refused at its place, on one
    printable line, and nothing is written."""
    (tmp_path / "specs").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "specs"), b"bad\xff\xfe\n.yaml"), "w") as fh:
        fh.write(spec("harmless"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, ["build", "specs", "--out", "out"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "specs/bad\\udcff\\udcfe\\n.yaml:1:1: error: the spec's file name is not valid UTF-8; rename the file"
    ]
    assert not (tmp_path / "out").exists()


def test_lone_surrogate_in_the_description_is_a_spec_error(tmp_path):
    """A YAML \\ud800 escape without its pair cannot be written as UTF-8: an error at its place."""
    (tmp_path / "m.yaml").write_text(spec("lone \ud800 surrogate"))  # written as a \\ud800 escape
    result = CliRunner().invoke(app, ["build", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "error: lone surrogate U+D800 in this text" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "source, text",
    [
        ("x @ W1 + b1", "x @ W1 + b1"),
        ("-(t * log(p) + (1 - t) * log(1 - p))", "-(t * log(p) + (1 - t) * log(1 - p))"),
        ("xc / sqrt(var + 1e-5)", "xc / sqrt(var + 1e-5)"),
        ("((x))@W  *  1_000 + .5 + 0x1F", "x @ W * 1_000 + .5 + 0x1F"),
        ("transpose(k, axes=[0, 2, 1])", "transpose(k, axes=[0, 2, 1])"),
        ('softmax_cross_entropy(z, y, reduction="sum")', "softmax_cross_entropy(z, y, reduction='sum')"),
        ("concatenate((a,\n  b), axis = -1)", "concatenate((a, b), axis=-1)"),
        ("x ** -(\n 2 # two\n)", "x ** (-2)"),
    ],
)
def test_echo_is_one_canonical_line(source, text):
    from gradgen.lower import echo

    assert echo(ast.parse(source, mode="eval").body, source) == text


def test_echo_of_an_expression_too_deep_to_unparse(monkeypatch):
    from gradgen import lower

    def too_deep(node):
        raise RecursionError

    monkeypatch.setattr(lower.ast, "unparse", too_deep)
    source = "(x\n  +  y  \\\n + z)"
    assert lower.echo(ast.parse(source, mode="eval").body, source) == "(x + y \\ + z)"
