"""Deep and huge specs (issue 7, part 5): real models build, absurd ones get an error with its limit.

A real unrolled RNN has thousands of chained entries or a thousand inputs, so every walk a real model
reaches is iterative and these build.  What no model needs (one expression nested hundreds deep, YAML
nested thousands deep) is refused with a `PATH:LINE:COL: error:` naming the limit, never a traceback.
The size tests print their build time (`pytest -s`), but assert nothing about it: the machine may be
shared.  benchmarks/README.md records the figures.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradgen.cli import app
from gradgen.lower import MAX_EXPR_DEPTH, source_line
from gradgen.pipeline import build_text


def build(spec: Path, out: Path):
    return CliRunner().invoke(app, ["build", str(spec), "--out", str(out)])


def clean_error(result, spec: Path) -> list[str]:
    """Exit 2 with only `PATH:LINE:COL: error:` lines on stderr and no traceback; the lines."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert lines
    for line in lines:
        assert line.startswith(f"{spec}:") and ": error: " in line, line
    return lines


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_gradients(module, inputs: dict, wrt: list[str], seed: int = 0) -> None:
    """value_and_grad equals forward + backward, and <grad, v> equals a central difference along v."""
    value, grads = module.value_and_grad(**inputs)
    out, cache = module.forward(**inputs)
    assert np.isfinite(value) and value == pytest.approx(float(out), rel=1e-12)
    split = module.backward(1.0, cache)
    rng = np.random.default_rng(seed)
    directional, eps = 0.0, 1e-6
    up, down = dict(inputs), dict(inputs)
    for name in wrt:
        np.testing.assert_allclose(getattr(grads, name), getattr(split, name), rtol=1e-10, atol=1e-12)
        v = rng.standard_normal(np.shape(inputs[name]))
        directional += float(np.sum(getattr(grads, name) * v))
        up[name] = inputs[name] + eps * v
        down[name] = inputs[name] - eps * v
    numeric = (module.forward(**up)[0] - module.forward(**down)[0]) / (2 * eps)
    assert directional == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def timed_build(spec: Path, out: Path) -> float:
    start = time.perf_counter()
    result = build(spec, out)
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output[-2000:]
    print(f"\n{spec.name}: gradgen build took {seconds:.1f} s")
    return seconds


# -- deep but legal: these build --------------------------------------------------------------------


def test_2000_chained_entries_build(tmp_path):
    """An RNN unrolled over 2,000 steps: each step a graph entry reading the one before."""
    steps = 2000
    lines = ["name: chain2000", "inputs:", "  x: [N, H]", "  U: [H, H]", "  b: [H]", "graph:"]
    lines.append("  h0: tanh(x)")
    lines += [f"  h{t}: tanh(h{t - 1} @ U + b)" for t in range(1, steps)]
    lines += [f"  loss: mean(h{steps - 1} * h{steps - 1})", "wrt: [x, U, b]"]
    spec = tmp_path / "chain2000.yaml"
    spec.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    timed_build(spec, out)
    module = load(out / "chain2000.py", "chain2000")
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((2, 3)),
        "U": 0.5 * rng.standard_normal((3, 3)),
        "b": 0.1 * rng.standard_normal(3),
    }
    check_gradients(module, inputs, ["x", "U", "b"])


def test_1000_inputs_build(tmp_path):
    """An RNN unrolled over 1,000 steps with one input per step: 1,003 inputs, 1,001 entries."""
    steps = 1000
    lines = ["name: rnn1000", "inputs:", "  h0: [N, H]"]
    lines += [f"  x{t}: [N, D]" for t in range(steps)]
    lines += ["  W: [D, H]", "  U: [H, H]", "  b: [H]", "graph:"]
    lines += [f"  h{t + 1}: tanh(x{t} @ W + h{t} @ U + b)" for t in range(steps)]
    lines += [f"  loss: mean(h{steps} * h{steps})", "wrt: [W, U, b]"]
    spec = tmp_path / "rnn1000.yaml"
    spec.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    timed_build(spec, out)
    module = load(out / "rnn1000.py", "rnn1000")
    rng = np.random.default_rng(1)
    inputs = {f"x{t}": rng.standard_normal((2, 4)) for t in range(steps)}
    inputs.update(
        h0=rng.standard_normal((2, 3)),
        W=0.5 * rng.standard_normal((4, 3)),
        U=0.5 * rng.standard_normal((3, 3)),
        b=0.1 * rng.standard_normal(3),
    )
    check_gradients(module, inputs, ["W", "U", "b"])


def test_a_chain_of_scalar_entries_builds(tmp_path):
    """2,000 scalar entries: value_and_grad's cotangent stays a number along the whole chain."""
    lines = ["inputs:", "  x: [N]", "graph:", "  s0: sum(x)"]
    lines += [f"  s{t}: s{t - 1} * 0.5 + 1" for t in range(1, 2000)]
    spec = tmp_path / "scalars.yaml"
    spec.write_text("\n".join(lines) + "\n")
    result = build(spec, tmp_path / "out")
    assert result.exit_code == 0, result.output[-2000:]
    module = load(tmp_path / "out" / "scalars.py", "scalars")
    x = np.arange(4.0)
    value, grads = module.value_and_grad(x)
    assert value == pytest.approx(6.0 * 0.5**1999 + 2 * (1 - 0.5**1999))
    np.testing.assert_allclose(grads.x, np.full(4, 0.5**1999))
    assert grads.x.dtype == np.float64


def test_an_operand_used_494_times_in_one_concatenate(tmp_path):
    """Its gradient sums 494 slices: the sum is built as a shallow tree, not 494 nested additions."""
    spec = tmp_path / "cat.yaml"
    spec.write_text(
        "inputs:\n  x: [N, D]\ngraph:\n  c: concatenate((" + ", ".join(["x"] * 494) + "))\n"
        "  loss: sum(c * c)\n"
    )
    result = build(spec, tmp_path / "out")
    assert result.exit_code == 0, result.output[-2000:]
    module = load(tmp_path / "out" / "cat.py", "cat")
    x = np.random.default_rng(2).standard_normal((2, 3))
    value, grads = module.value_and_grad(x)
    assert value == pytest.approx(494 * np.sum(x * x))
    np.testing.assert_allclose(grads.x, 2 * 494 * x)


def test_a_sum_at_the_depth_limit_builds(tmp_path):
    terms = MAX_EXPR_DEPTH - 1  # n terms nest n - 1 additions, inside sum(...) one more
    spec = tmp_path / "deep.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(" + " + ".join(["x"] * terms) + ")\n")
    result = build(spec, tmp_path / "out")
    assert result.exit_code == 0, result.output[-2000:]
    module = load(tmp_path / "out" / "deep.py", "deep")
    value, grads = module.value_and_grad(np.array([1.0, 2.0]))
    assert value == pytest.approx(3.0 * terms)
    np.testing.assert_allclose(grads.x, [terms, terms])


# -- absurd: an error naming the limit --------------------------------------------------------------


def test_one_more_level_is_an_error(tmp_path):
    spec = tmp_path / "deeper.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(" + " + ".join(["x"] * MAX_EXPR_DEPTH) + ")\n")
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert line == (
        f"{spec}:4:6: error: the expression nests operations more than {MAX_EXPR_DEPTH} deep "
        f"(this one nests {MAX_EXPR_DEPTH + 1}); split it into several graph entries"
    )


@pytest.mark.parametrize("terms", [5_000, 100_000])
def test_an_expression_too_deep_for_pythons_parser(tmp_path, terms):
    """Past a few thousand levels Python's own parser gives up (RecursionError): the same error."""
    spec = tmp_path / "huge.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(" + " + ".join(["x"] * terms) + ")\n")
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert line.startswith(
        f"{spec}:4:6: error: the expression nests operations more than {MAX_EXPR_DEPTH} deep"
    )
    assert not (tmp_path / "out").exists()


def test_thousands_of_nested_brackets(tmp_path):
    spec = tmp_path / "brackets.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(" + "(" * 3000 + "x" + ")" * 3000 + ")\n")
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert "too many nested parentheses" in line


def test_yaml_nested_at_the_limit_is_an_ordinary_error(tmp_path):
    from gradgen.load import MAX_YAML_DEPTH

    # the spec mapping is level 1, so the value of name: may nest MAX_YAML_DEPTH - 1 lists
    spec = tmp_path / "nest.yaml"
    depth = MAX_YAML_DEPTH - 1
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(x)\nname: " + "[" * depth + "]" * depth + "\n")
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert "'name' must be a single value, not a list" in line
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(x)\nname: " + "[" * (depth + 1) + "]" * (depth + 1))
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert line == (
        f"{spec}:5:{7 + depth}: error: the YAML is nested more than {MAX_YAML_DEPTH} levels deep; "
        "a spec needs 6 at most (a block param declared with its shape and dtype)"
    )


def test_deep_yaml_of_block_mappings(tmp_path):
    spec = tmp_path / "blocks.yaml"
    body = "".join(" " * k + f"k{k}:\n" for k in range(5000))
    spec.write_text(
        "inputs:\n  x: [N]\ngraph:\n  z: sum(x)\nwrt:\n"
        + "".join("  " + ln + "\n" for ln in body.splitlines())
    )
    lines = clean_error(build(spec, tmp_path / "out"), spec)
    assert len(lines) == 1 and "nested more than" in lines[0]


def test_aliases_are_walked_once(tmp_path):
    """A billion-laughs style spec: each alias doubles the tree, but each node is checked once."""
    spec = tmp_path / "laughs.yaml"
    rows = ['a0: &a0 ["\\ud800", "x"]']
    rows += [f"a{k}: &a{k} [*a{k - 1}, *a{k - 1}]" for k in range(1, 30)]
    spec.write_text("\n".join(rows) + "\ninputs:\n  x: [N]\ngraph:\n  z: sum(x)\n")
    lines = clean_error(build(spec, tmp_path / "out"), spec)
    assert lines == [
        f"{spec}:1:10: error: lone surrogate U+D800 in this text (character 1); a \\u escape between "
        "\\ud800 and \\udfff must be half of a pair"
    ]


# -- text that no line of a message or a generated file may break -----------------------------------


def test_a_nul_character_in_an_expression(tmp_path, monkeypatch):
    """Python 3.10 and early 3.11 raise ValueError, not SyntaxError, for a NUL in source text."""
    import ast

    spec = tmp_path / "nul.yaml"
    spec.write_text('inputs:\n  x: [N]\ngraph:\n  z: "sum(x)\\0"\n')
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert "invalid expression" in line and "null bytes" in line

    real = ast.parse

    def old_parse(source, mode="exec"):
        if "\0" in source:
            raise ValueError("source code string cannot contain null bytes")
        return real(source, mode=mode)

    monkeypatch.setattr("gradgen.lower.ast.parse", old_parse)
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert line == f"{spec}:4:6: error: invalid expression: source code string cannot contain null bytes"


def test_a_surrogate_pair_is_one_character(tmp_path):
    spec = tmp_path / "emoji.yaml"
    spec.write_text('description: "smile \\ud83d\\ude00"\ninputs:\n  x: [N]\ngraph:\n  z: sum(x)\n')
    result = build(spec, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "smile \U0001f600" in (tmp_path / "out" / "emoji.py").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "expression",
    [
        '"sum(x\\n * 2)"',  # a YAML \n escape inside brackets
        '"sum(x # twice\\n * 2)"',  # a comment inside a multi-line expression
        '"sum(x \\\\\\n * 2)"',  # a backslash continuation
        "|\n    sum(\n      x  # the input\n      * 2\n    )",  # a block scalar
    ],
)
def test_a_multi_line_expression_builds_and_is_echoed_on_one_line(tmp_path, expression):
    spec = tmp_path / "multi.yaml"
    spec.write_text(f"inputs:\n  x: [N]\ngraph:\n  z: {expression}\n")
    result = build(spec, tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "multi.py").read_text(encoding="utf-8")
    assert "    # z = sum(x * 2)\n" in text
    module = load(tmp_path / "out" / "multi.py", "multi")
    value, grads = module.value_and_grad(np.array([1.0, 2.0]))
    assert value == 6.0
    np.testing.assert_allclose(grads.x, [2.0, 2.0])


def test_an_error_in_a_multi_line_expression_is_one_line(tmp_path):
    spec = tmp_path / "multi.yaml"
    spec.write_text('inputs:\n  x: [N, D]\n  W: [H, C]\ngraph:\n  z: "sum((x  # input\\n  @ W))"\n')
    (line,) = clean_error(build(spec, tmp_path / "out"), spec)
    assert line == (
        f"{spec}:5:12: error: matmul inner dims differ: D (x, line 2) vs H (W, line 3), "
        "in shapes [N, D] @ [H, C]"
    )


def test_source_line_keeps_single_line_text_and_joins_the_rest():
    assert source_line("x @ W + b") == "x @ W + b"
    assert source_line("sum(\n  x,\n  axis=0,\n)") == "sum(x, axis=0,)"
    assert source_line("a +  # why\n b") == "a + b"
    assert source_line("einsum('''ij,\njk->ik''', a, b)") == "einsum('''ij,\\njk->ik''', a, b)"
    assert source_line("x # '#' in a comment") == "x"
    assert source_line("f('#')") == "f('#')"


def test_a_file_name_that_is_not_utf8(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.yaml"
    with open(raw, "wb") as fh:
        fh.write(b"name: cafe\ninputs:\n  x: [N]\ngraph:\n  z: sum(x)\n")
    result = CliRunner().invoke(app, ["build", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr == (
        f"{folder}/caf\\udce9.yaml:1:1: error: the spec's file name is not valid UTF-8; rename the file\n"
    )


def test_a_file_name_with_a_line_break_gives_one_line_errors(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / "bad\nname.yaml"
    spec.write_text("inputs:\n  x: [N]\ngraph:\n  z: sum(y)\n")
    result = CliRunner().invoke(app, ["build", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    place = f"{folder}/bad\\nname.yaml"
    assert result.stderr.splitlines() == [
        f"{place}:1:1: error: the file name 'bad\\nname' is not a valid module name; set 'name:' in the spec",
        f"{place}:4:10: error: unknown name 'y'; not an input or an earlier graph entry",
    ]


def test_build_text_is_as_deterministic_in_parallel(tmp_path, monkeypatch):
    """A long module is formatted in parallel pieces; forcing that on a small one changes no byte."""
    import gradgen.fmt

    spec = Path(__file__).resolve().parents[1] / "specs" / "mlp.yaml"
    text = spec.read_text()
    whole = build_text("specs/mlp.yaml", text)
    monkeypatch.setattr(gradgen.fmt, "PIECEWISE_LINES", 0)
    assert build_text("specs/mlp.yaml", text) == whole
