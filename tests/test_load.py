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


# --------------------------------------------------------------------------------------------------
# products of dims in shapes


@pytest.mark.parametrize("dim", ["3*D", "H*Dh", "H * Dh", "2*H*Dh", "B*T"])
def test_a_dim_may_be_a_product_of_names_and_ints(dim):
    doc = load("s.yaml", f"inputs:\n  x: [N, {dim}]\ngraph:\n  y: sum(x)\n")
    assert doc.inputs[0].shape[1].value == dim


@pytest.mark.parametrize("dim", ["3*", "D*0", "2**D", "D*-1", "D*_h", "D*class", "D+1", "D/2"])
def test_a_malformed_product_is_an_error_at_the_dim(dim):
    (msg,) = errors(f"inputs:\n  x: [N, {dim}]\ngraph:\n  y: sum(x)\n")
    assert msg.startswith(
        f"bad.yaml:2:10: error: dim {dim!r} of input 'x' must be a positive int, a name like N or a product like 3*D"
    ), msg


# --------------------------------------------------------------------------------------------------
# blocks

BLOCKS = """\
inputs:
  x: [N, D]
blocks:
  layernorm:
    params: {x: [M, E], g: [E], b: {shape: [E]}}
    graph:
      mu: mean(x, axis=-1, keepdims=True)
      out: g * (x - mu) + b
    output: out
  scale:
    params: [a, k]
    graph:
      out: a * k
graph:
  y: layernorm(x, x[0], x[1])
"""


def test_blocks_keep_their_params_entries_and_places():
    doc = load("s.yaml", BLOCKS)
    ln, scale = doc.blocks
    assert ln.name.value == "layernorm" and ln.name.place == Place("s.yaml", 4, 3)
    assert [p.name.value for p in ln.params] == ["x", "g", "b"]
    assert [[d.value for d in p.shape] for p in ln.params] == [["M", "E"], ["E"], ["E"]]
    assert [p.dtype.value for p in ln.params] == ["float"] * 3
    assert [e.name.value for e in ln.graph] == ["mu", "out"]
    assert ln.graph[1].expr.place == Place("s.yaml", 8, 12)
    assert ln.output.value == "out"
    assert [(p.name.value, p.shape, p.dtype) for p in scale.params] == [("a", None, None), ("k", None, None)]
    assert scale.output is None


def test_a_spec_without_blocks_has_none():
    assert load("s.yaml", "inputs:\n  x: [N]\ngraph:\n  y: sum(x)\n").blocks == ()


@pytest.mark.parametrize(
    "block, fragment",
    [
        ("  b: [x]\n", "6:6: error: block 'b' must be a mapping, not a list"),
        ("  b:\n    graph:\n      out: x\n", "6:3: error: block 'b' has no 'params'"),
        ("  b:\n    params: [x]\n", "6:3: error: block 'b' has no 'graph'"),
        ("  b:\n    params: []\n    graph:\n      out: x\n", "7:13: error: block 'b' has no params"),
        (
            "  b:\n    params: x\n    graph:\n      out: x\n",
            "7:13: error: the params of block 'b' must be a list of names or a mapping",
        ),
        ("  b:\n    params: [x]\n    graph: {}\n", "8:12: error: the graph of block 'b' is empty"),
        (
            "  b:\n    params: [x]\n    graph:\n      out: x\n    outputs: out\n",
            "10:5: error: unknown key 'outputs' in block 'b'",
        ),
        (
            "  b:\n    params: {x: [N, 0]}\n    graph:\n      out: x\n",
            "7:21: error: dim '0' of param 'x' must be a positive int",
        ),
        (
            "  b:\n    params: {x: {dtype: int}}\n    graph:\n      out: x\n",
            "7:14: error: param 'x' has no 'shape'",
        ),
    ],
)
def test_block_structure_errors_have_places(block, fragment):
    msgs = errors("inputs:\n  x: [N]\ngraph:\n  y: sum(x)\nblocks:\n" + block)
    assert any(m.startswith("bad.yaml:" + fragment) for m in msgs), msgs
