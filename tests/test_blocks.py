"""Unit tests for gradgen.blocks: reusable sub-graphs, checked once, inlined at every call."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from gradgen import blocks
from gradgen.diagnostics import SpecError
from gradgen.dims import Dim
from gradgen.load import load
from gradgen.lower import lower
from gradgen.pipeline import build_text
from gradgen.shapes import infer

LAYERNORM = """\
blocks:
  layernorm:
    params: {x: [M, E], g: [E], b: [E]}
    graph:
      mu: mean(x, axis=-1, keepdims=True)
      xc: x - mu
      var: mean(square(xc), axis=-1, keepdims=True)
      out: g * xc / sqrt(var + 1e-5) + b
"""


def spec(graph: str, inputs: str = "  x: [N, D]\n  g: [D]\n  b: [D]\n", blocks_: str = LAYERNORM) -> str:
    return f"inputs:\n{inputs}{blocks_}graph:\n{graph}"


def lowered(text: str):
    return lower(load("s.yaml", text))


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        infer(lowered(text)[0])
    return [str(d) for d in info.value.diagnostics]


def by_hint(graph, hint):
    return next(n for n in graph.nodes if n.hint == hint)


# --------------------------------------------------------------------------------------------------
# inlining


def test_each_call_is_inlined_with_its_own_names_and_origin():
    g, warnings = lowered(
        spec("  h1: layernorm(x, g, b)\n  h2: layernorm(tanh(h1), g, b)\n  loss: sum(h2)\n")
    )
    assert warnings == []
    mu1, mu2 = by_hint(g, "h1_mu"), by_hint(g, "h2_mu")
    assert mu1.op == mu2.op == "mean" and mu1.args == (0,)
    assert g.nodes[mu2.args[0]].op == "tanh"
    (frame,) = mu2.origin
    assert (frame.block, frame.caller, frame.entry, frame.is_output) == ("layernorm", "h2", "mu", False)
    assert frame.call_source == "layernorm(tanh(h1), g, b)" and frame.call_place.line == 15
    assert frame.source == "mean(x, axis=-1, keepdims=True)" and frame.place.line == 9
    h1 = next(n for n in g.nodes if n.name == "h1")
    assert h1.op == "add" and h1.origin[0].is_output and h1.entry == "h1"
    assert [n.hint for n in g.nodes if n.hint and n.hint.startswith("h1_")] == [
        "h1_mu",
        "h1_xc",
        "h1_var_square",
        "h1_var",
        "h1_mul",
        "h1_add",
        "h1_sqrt",
        "h1_div",
        "h1_layernorm",  # (the graph entry h1 names it)
    ]


def test_identical_calls_share_their_nodes():
    g, _ = lowered(spec("  h1: layernorm(x, g, b)\n  h2: layernorm(x, g, b)\n  loss: sum(h1 * h2)\n"))
    assert sum(n.op == "mean" for n in g.nodes) == 2  # mu and var, once
    (h1,) = [e for e in g.entries if e.name == "h1"]
    (h2,) = [e for e in g.entries if e.name == "h2"]
    assert h1.node == h2.node


def test_arguments_by_keyword_and_numbers_as_arguments():
    scale = "blocks:\n  scale:\n    params: [a, k]\n    graph:\n      out: a * k + k ** 2\n"
    g, _ = lowered(spec("  y: scale(k=0.5, a=x)\n  loss: sum(y)\n", blocks_=scale))
    y = next(n for n in g.nodes if n.name == "y")
    mul = g.nodes[y.args[0]]
    assert mul.op == "mul" and mul.args[0] == 0 and mul.args[1].value == 0.5
    assert y.args[1].value == 0.25  # k ** 2 folded for this call


def test_nested_blocks_name_their_values_along_the_calls():
    two = LAYERNORM + (
        "  twice:\n    params: {x: [M, E], g: [E], b: [E]}\n    graph:\n"
        "      a: layernorm(x, g, b)\n      out: layernorm(relu(a), g, b) * sqrt(E)\n"
    )
    g, warnings = lowered(spec("  h: twice(x, g, b)\n  loss: sum(h)\n", blocks_=two))
    assert warnings == []
    mu = by_hint(g, "h_a_mu")
    assert [(f.block, f.caller, f.entry) for f in mu.origin] == [
        ("twice", "h", "a"),
        ("layernorm", "a", "mu"),
    ]
    assert by_hint(g, "h_a").op == "add"  # the inner call's value is named after the outer entry
    h = next(n for n in g.nodes if n.name == "h")
    assert h.op == "mul" and h.args[1].num.args[0].dim == Dim.sym("D")  # sqrt(E) with E = D at this call


def test_a_block_dim_takes_the_callers_dim_at_each_call():
    flat = (
        "blocks:\n  heads:\n    params: {q: [B, T, H*K], w: [H, K]}\n    graph:\n"
        "      out: reshape(q, [B, T, H, K]) / sqrt(K)\n"
    )
    inputs = "  x: [N, S, A*C]\n  w: [A, C]\n"
    g, _ = lowered(spec("  y: heads(x, w)\n  loss: sum(y)\n", inputs, flat))
    tg = infer(g)
    y = next(n for n in g.nodes if n.name == "y")
    assert str(tg.types[y.id]) == "[N, S, A, C]"
    assert y.args[1].num.args[0].dim == Dim.sym("C")


# --------------------------------------------------------------------------------------------------
# errors: at the call, at the block's line, and never twice


@pytest.mark.parametrize(
    "call, fragment",
    [
        ("layernorm(x, g)", "6:6: error: block layernorm is missing its argument 'b'"),
        ("layernorm(x, g, b, b)", "6:25: error: block layernorm takes 3 arguments: x, g, b"),
        ("layernorm(x, g, b, c=b)", "6:27: error: unknown keyword argument 'c' for block layernorm"),
        ("layernorm(x, g, x=b, b=b)", "6:24: error: block layernorm got 'x' twice"),
        (
            "layernorm(x, x, b)",
            "6:19: error: argument g of block 'layernorm' (x, shape [N, D]) does not fit g: [E] declared at "
            "line 9: rank 2, declared rank 1",
        ),
        (
            "layernorm(x, sum(x, axis=1), b)",
            "6:19: error: argument g of block 'layernorm' (sum(x, axis=1), shape [N]) does not fit g: [E] "
            "declared at line 9: axis 0 is N, but E is D from argument x (x)",
        ),
        ("layernorm", "6:6: error: block 'layernorm' must be called, as layernorm(...)"),
        ("layrnorm(x, g, b)", "6:6: error: unknown op 'layrnorm'; did you mean 'layernorm'?"),
    ],
)
def test_call_errors_point_at_the_call(call, fragment):
    text = "inputs:\n  x: [N, D]\n  g: [D]\n  b: [D]\ngraph:\n" + f"  y: {call}\n" + LAYERNORM
    msgs = errors(text)
    assert any(m.startswith("s.yaml:" + fragment) for m in msgs), msgs


def test_declared_dtypes_and_literal_dims_are_checked_per_call():
    block = "blocks:\n  pick:\n    params: {z: [N, 3], y: {shape: [N], dtype: int}}\n    graph:\n      out: softmax_cross_entropy(z, y)\n"
    inputs = "  z: [B, C]\n  y: {shape: [B], dtype: int}\n  f: [B]\n"
    (msg,) = errors(spec("  loss: pick(z, f)\n", inputs, block))
    assert "argument y of block 'pick' (f, shape [B]) does not fit y: [N] int declared at line 7" in msg
    assert msg.endswith("it is a float tensor, the param's dtype is int")
    (msg,) = errors(spec("  loss: pick(z, y)\n", inputs, block))
    assert msg.endswith(
        "axis 1 is C, but the param declares 3; a literal dim is never assumed equal to a symbolic one"
    )


def test_an_error_in_a_block_is_reported_once_at_its_line_and_its_calls_stay_silent():
    bad = LAYERNORM.replace("out: g * xc", "out: gg * xc")
    msgs = errors(spec("  h1: layernorm(x, g, b)\n  h2: layernorm(h1, g, b)\n  loss: sum(h2)\n", blocks_=bad))
    assert msgs == [
        "s.yaml:12:12: error: unknown name 'gg'; a block sees its params, its earlier entries, the dims of "
        "its declared param shapes, pi and e; did you mean 'g'?"
    ]


def test_a_shape_error_in_a_declared_block_is_found_at_its_definition():
    bad = LAYERNORM.replace("out: g * xc", "out: g @ xc")
    msgs = errors(spec("  h1: layernorm(x, g, b)\n  h2: layernorm(h1, g, b)\n  loss: sum(h2)\n", blocks_=bad))
    assert msgs == [
        "s.yaml:12:14: error: matmul inner dims differ: E (g, line 7) vs M (xc, line 10), in shapes [E] @ [M, E]"
    ]


def test_a_shape_error_that_depends_on_the_call_names_the_call():
    proj = "blocks:\n  proj:\n    params: [a, w]\n    graph:\n      out: a @ w\n"
    inputs = "  x: [N, D]\n  W: [D, H]\n"
    msgs = errors(spec("  h: proj(x, W)\n  k: proj(h, W)\n  loss: sum(k)\n", inputs, proj))
    assert msgs == [
        "s.yaml:8:14: error: matmul inner dims differ: H (h, line 10) vs D (W, line 3), in shapes [N, H] @ "
        "[D, H] (in block 'proj', called by 'k' at line 11)"
    ]


def test_a_number_error_that_depends_on_the_call_names_the_call():
    block = "blocks:\n  norm:\n    params: {x: [M, E]}\n    graph:\n      out: x / (E - 3)\n"
    msgs = errors(
        spec(
            "  y: norm(x)\n  z: norm(exp(w))\n  loss: sum(y) + sum(z)\n", "  x: [N, D]\n  w: [N, 3]\n", block
        )
    )
    assert msgs == [
        "s.yaml:8:12: error: x / (E - 3) divides by zero (in block 'norm', called by 'z' at line 11)"
    ]


def test_nested_call_errors_list_every_call():
    block = (
        "blocks:\n  inner:\n    params: [a]\n    graph:\n      out: a @ a\n"
        "  outer:\n    params: [a]\n    graph:\n      t: exp(a)\n      out: inner(t)\n"
    )
    (msg,) = errors(spec("  y: outer(x)\n  loss: sum(y)\n", "  x: [N, D]\n", block))
    assert msg.endswith(
        "(in block 'inner', called by 'out' at line 12 in block 'outer', called by 'y' at line 14)"
    )
    assert msg.startswith("s.yaml:7:14: error: matmul inner dims differ")


def test_an_arguments_own_shape_error_is_the_only_report():
    inputs = "  x: [N, D]\n  g: [D]\n  b: [D]\n  w: [H]\n"
    msgs = errors(spec("  h: layernorm(x + w, g, b)\n  loss: sum(h)\n", inputs))
    assert len(msgs) == 1 and "dims do not broadcast: D (x, line 2) vs H (w, line 5)" in msgs[0], msgs


@pytest.mark.parametrize(
    "blocks_, fragment",
    [
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      out: a(x)\n",
            "10:12: error: block 'a' calls itself; blocks are inlined, so they cannot recurse",
        ),
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      out: b(x)\n  b:\n    params: [x]\n    graph:\n      out: x\n",
            "10:12: error: block 'b' is defined below block 'a' (line 11); a block may call only the blocks defined above it",
        ),
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      out: x + W\n",
            "10:16: error: unknown name 'W'; a block sees its params",
        ),
        (
            "blocks:\n  a:\n    params: [x, x]\n    graph:\n      out: x\n",
            "8:17: error: param 'x' of block 'a' is declared twice",
        ),
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      x: exp(x)\n",
            "10:7: error: 'x' is already defined in block 'a' (line 8)",
        ),
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      y: exp(x)\n    output: z\n",
            "11:13: error: output 'z' of block 'a' is not a param or an entry of it",
        ),
        (
            "blocks:\n  _a:\n    params: [x]\n    graph:\n      y: exp(x)\n",
            "7:3: error: block name '_a' must not start with an underscore",
        ),
        (
            "blocks:\n  a:\n    params: {x: [N, H*K]}\n    graph:\n      y: exp(x)\n",
            "8:21: error: dim 'H' of block 'a' appears only inside products (H*K)",
        ),
        (
            "blocks:\n  a:\n    params: [x]\n    graph:\n      y: exp(x) * sqrt(N)\n",
            "10:24: error: unknown name 'N'",
        ),
    ],
)
def test_definition_errors(blocks_, fragment):
    text = "inputs:\n  x: [N, D]\n  W: [D, D]\ngraph:\n  y: sum(x)\n" + blocks_
    with pytest.raises(SpecError) as info:
        lowered(text)
    msgs = [str(d) for d in info.value.diagnostics]
    assert any(m.startswith("s.yaml:" + fragment) for m in msgs), msgs


def test_block_warnings():
    text = spec(
        "  loss: sum(exp(x))\n",
        blocks_=LAYERNORM
        + "  exp:\n    params: [a]\n    graph:\n      unused: a * 2\n      out: a + 1\n    output: out\n",
    )
    g, warnings = lowered(text)
    assert [str(w) for w in warnings] == [
        "s.yaml:13:3: warning: block 'exp' has the name of an op; in this spec exp(...) calls the block",
        "s.yaml:16:7: warning: entry 'unused' of block 'exp' is not used by its output 'out' and is not computed",
        "s.yaml:6:3: warning: block 'layernorm' is never called",
    ]
    assert [n.op for n in g.nodes if n.op != "input"] == ["mul", "add", "sum"]  # the block, not the op


def test_inlining_past_the_node_limit_is_refused(monkeypatch):
    monkeypatch.setattr(blocks, "MAX_NODES", 50)
    chain = "blocks:\n  b0:\n    params: [a]\n    graph:\n      out: exp(a) + a\n"
    for k in range(1, 8):
        chain += f"  b{k}:\n    params: [a]\n    graph:\n      u: b{k - 1}(a)\n      out: b{k - 1}(u * 2)\n"
    with pytest.raises(SpecError) as info:
        lowered(spec("  y: b7(x)\n", "  x: [N]\n", chain))
    (msg,) = [str(d) for d in info.value.diagnostics]
    assert "makes a graph of more than 50 nodes" in msg


# --------------------------------------------------------------------------------------------------
# the generated module


def _module(text, tmp_path, name):
    built = build_text(f"{name}.yaml", text)
    files = dict(built.files)
    path = tmp_path / f"{name}.py"
    path.write_text(files[f"{name}.py"], encoding="utf-8")
    mod_spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return files[f"{name}.py"], mod


def _layernorm(x, g, b):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    return g * xc / np.sqrt((xc**2).mean(axis=-1, keepdims=True) + 1e-5) + b


def test_the_generated_module_computes_each_call_and_says_where_lines_come_from(tmp_path):
    text = spec("  h1: layernorm(x, g, b)\n  h2: layernorm(tanh(h1), g, b)\n  loss: sum(h2 * h1)\n")
    source, mod = _module(text, tmp_path, "two_norms")
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((4, 5)), rng.standard_normal(5), rng.standard_normal(5)
    h1 = _layernorm(x, g, b)
    expected = np.sum(_layernorm(np.tanh(h1), g, b) * h1)
    loss, grads = mod.value_and_grad(x, g, b)
    assert np.isclose(loss, expected, rtol=1e-12)
    eps = 1e-6
    bumped = b.copy()
    bumped[2] += eps
    h1b = _layernorm(x, g, bumped)
    numeric = (np.sum(_layernorm(np.tanh(h1b), g, bumped) * h1b) - expected) / eps
    assert np.isclose(grads.b[2], numeric, rtol=1e-4)
    assert "    # h1 = layernorm(x, g, b), inlined from block layernorm\n    h1_mu = x.mean(" in source
    assert "    # h2 = layernorm(tanh(h1), g, b), inlined from block layernorm\n    h2_mu = " in source
    assert "    # h2: layernorm -> xc = x - mu (block layernorm, line 10)\n" in source


def test_math_is_taken_only_by_a_call_that_computes_with_it():
    block = "blocks:\n  norm:\n    params: {x: [M, E]}\n    graph:\n      out: x / sqrt(E)\n"
    inputs = "  x: [N, D]\n  math: [D]\n"
    _, warnings = lowered(spec("  y: sum(x * math)\n", inputs, block))  # the block is never called
    assert [str(w) for w in warnings] == ["s.yaml:5:3: warning: block 'norm' is never called"]
    with pytest.raises(SpecError, match="the name 'math' is taken in this spec"):
        lowered(spec("  y: sum(norm(x) * math)\n", inputs, block))
