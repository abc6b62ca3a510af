"""Unit tests for gradgen.load: YAML text to a SpecDoc whose every node knows its place in the file."""

from __future__ import annotations

import pytest

from gradgen.diagnostics import Place, SpecError
from gradgen.load import load

SPEC = """\
name: demo
description: "a thing"
inputs:
  x: [N, 3]
  y: {shape: [N], dtype: int}
  w: {shape: [3]}
  s: []
graph:
  z: x @ w
  q: "exp(z)"
  r: sum(q) + s
output: r
wrt: w
"""


def errors(text: str, path: str = "bad.yaml") -> list[str]:
    with pytest.raises(SpecError) as info:
        load(path, text)
    return [str(d) for d in info.value.diagnostics]


def test_document_fields_and_places():
    doc = load("dir/spec.yaml", SPEC)
    assert doc.path == "dir/spec.yaml"
    assert doc.stem == "spec"
    assert doc.name.value == "demo" and doc.name.place == Place("dir/spec.yaml", 1, 7)
    assert doc.description.value == "a thing"
    assert [i.name.value for i in doc.inputs] == ["x", "y", "w", "s"]  # file order kept
    x = doc.inputs[0]
    assert x.name.place == Place("dir/spec.yaml", 4, 3)
    assert [d.value for d in x.shape] == ["N", "3"]
    assert [d.place for d in x.shape] == [Place("dir/spec.yaml", 4, 7), Place("dir/spec.yaml", 4, 10)]
    assert x.shape_place == Place("dir/spec.yaml", 4, 6)
    assert doc.inputs[1].shape[0].place == Place("dir/spec.yaml", 5, 15)
    assert doc.inputs[3].shape == ()  # a scalar
    assert [e.name.value for e in doc.graph] == ["z", "q", "r"]
    assert doc.graph[0].name.place == Place("dir/spec.yaml", 9, 3)
    assert doc.graph[0].expr.value == "x @ w"
    assert doc.graph[0].expr.place == Place("dir/spec.yaml", 9, 6)
    assert doc.output.value == "r" and doc.output.place == Place("dir/spec.yaml", 12, 9)
    assert [t.value for t in doc.wrt] == ["w"]  # a single name is accepted for wrt
    assert doc.wrt_place == Place("dir/spec.yaml", 13, 6)


def test_column_inside_an_expression_accounts_for_quotes():
    doc = load("s.yaml", SPEC)
    plain, quoted = doc.graph[0].expr, doc.graph[1].expr
    assert not plain.quoted and quoted.quoted
    # column of `w` in `x @ w` (offset 4) and of `z` in `"exp(z)"` (offset 4, plus the quote)
    assert plain.place_at(0, 4) == Place("s.yaml", 9, 10)
    assert quoted.place_at(0, 4) == Place("s.yaml", 10, 11)


def test_dtype_defaults_to_float():
    doc = load("s.yaml", SPEC)
    dtypes = {i.name.value: i.dtype.value for i in doc.inputs}
    assert dtypes == {"x": "float", "y": "int", "w": "float", "s": "float"}
    y = doc.inputs[1]
    assert y.dtype.place == Place("s.yaml", 5, 26)


def test_optional_keys_default_to_none():
    doc = load("path/to/net.yml", "inputs:\n  x: [N]\ngraph:\n  y: sum(x)\n")
    assert doc.stem == "net"
    assert doc.name is None and doc.description is None and doc.output is None
    assert doc.wrt is None and doc.wrt_place is None


def test_yaml_scalars_are_never_constructed():
    # `on`, `yes`, `null`-like words and numbers stay text: the spec is parsed, never evaluated by YAML
    doc = load("s.yaml", "inputs:\n  on: [N]\n  yes: [2]\ngraph:\n  out: on * 1e-3\n")
    assert [i.name.value for i in doc.inputs] == ["on", "yes"]
    assert doc.inputs[1].shape[0].value == "2"
    assert doc.graph[0].expr.value == "on * 1e-3"


@pytest.mark.parametrize(
    "text, place, key, first_line",
    [
        ("inputs:\n  x: [N]\n  x: [M]\ngraph:\n  y: x\n", "bad.yaml:3:3", "'x'", 2),
        ("inputs:\n  x: [N]\ngraph:\n  y: x\n  y: x\n", "bad.yaml:5:3", "'y'", 4),
        ("inputs:\n  x: [N]\ngraph:\n  y: x\ngraph:\n  z: x\n", "bad.yaml:5:1", "'graph'", 3),
        ("inputs:\n  x: {shape: [N], shape: [M]}\ngraph:\n  y: x\n", "bad.yaml:2:19", "'shape'", 2),
    ],
)
def test_duplicate_keys_are_errors_at_the_second_key(text, place, key, first_line):
    (msg,) = errors(text)
    assert msg.startswith(place + ": error: duplicate key " + key), msg
    assert f"line {first_line}" in msg


def test_every_problem_is_reported_not_just_the_first():
    text = "inputs:\n  x: [N]\n  x: [M]\n  z: {shape: [N], dtype: complex}\ngraph:\n  y: x\nextra: 1\n"
    msgs = errors(text)
    assert len(msgs) == 3, msgs
    assert any(m.startswith("bad.yaml:3:3: error: duplicate key 'x'") for m in msgs)
    assert any(m.startswith("bad.yaml:4:26: error: unknown dtype 'complex'") for m in msgs)
    assert any(m.startswith("bad.yaml:7:1: error: unknown top-level key 'extra'") for m in msgs)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "1:1: error: the spec file is empty"),
        ("- a\n- b\n", "1:1: error: the spec must be a mapping, not a list"),
        ("graph:\n  y: x\n", "1:1: error: missing required key 'inputs'"),
        ("inputs:\n  x: [N]\n", "1:1: error: missing required key 'graph'"),
        (
            "inputs:\n\tx: [N]\ngraph:\n  y: x\n",
            "2:1: error: YAML syntax error: tab character in indentation",
        ),
        ("inputs:\n  x: N\ngraph:\n  y: x\n", "2:6: error: the shape of input 'x' must be a list of dims"),
        (
            "inputs:\n  x: [N, 0]\ngraph:\n  y: x\n",
            "2:10: error: dim '0' of input 'x' must be a positive int",
        ),
        (
            "inputs:\n  x: [N, '3']\ngraph:\n  y: x\n",
            "2:10: error: dim '3' of input 'x' must be a positive int",
        ),
        ("inputs:\n  x: {dtype: float}\ngraph:\n  y: x\n", "2:3: error: input 'x' has no 'shape'"),
        ("inputs:\n  x: [N]\ngraph:\n  y:\n", "4:5: error: the expression of 'y' must be a single value"),
    ],
)
def test_structural_errors_have_places(text, fragment):
    msgs = errors(text)
    assert any(m.startswith("bad.yaml:" + fragment) for m in msgs), msgs
