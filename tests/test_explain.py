"""gradgen explain: the derivation, line numbers, graph, cost report (FLOPs checked against counts made
by hand, memory against tracemalloc), Markdown and HTML, and the HTML in headless Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradgen import cost
from gradgen.cli import app
from gradgen.explain import explain, module_lines
from gradgen.pipeline import build_text, typed_text
from gradgen.steps import derivation
from gradgen.texmath import Symbols, bar

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.yaml"))


def derive(path: Path):
    text = path.read_text()
    d = derivation(typed_text(str(path), text)[0])
    module = dict(build_text(str(path), text).files)[f"{d.name}.py"]
    return d, module


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="gradgen")


# --------------------------------------------------------------------------------------------------
# FLOPs, counted by hand from the specs


def flop_table(path: Path) -> dict[str, tuple[str, str]]:
    d, _ = derive(path)
    return {
        e.name: (cost.show(e.forward, d.dim_order), cost.show(e.backward, d.dim_order)) for e in cost.flops(d)
    }


def test_mlp_flops_match_a_count_by_hand():
    # x [N, D], W1 [D, H], b1 [H], W2 [H, C], b2 [C], wrt W1, b1, W2, b2 (not x)
    assert flop_table(REPO / "specs" / "mlp.yaml") == {
        # x @ W1: 2NDH, + b1: NH | dW1 = x.T @ dz1: 2NDH, db1 = sum over N: NH (dx not needed)
        "z1": ("2*N*D*H + N*H", "2*N*D*H + N*H"),
        # relu: NH | compare and multiply: 2NH
        "h": ("N*H", "2*N*H"),
        # h @ W2: 2NHC, + b2: NC | dh = dlogits @ W2.T: 2NHC, dW2 = h.T @ dlogits: 2NHC, db2: NC
        "logits": ("2*N*H*C + N*C", "4*N*H*C + N*C"),
        # max, shift, exp, row sums: 4NC; log of N sums and the N picked labels: 2N
        # | normalise and scale: NC + N, subtract at the N labels: N
        "loss": ("4*N*C + 2*N", "N*C + 2*N"),
    }


def test_attention_flops_match_a_count_by_hand():
    # x [B, T, D], Wq Wk Wv [D, K], Wo [K, D]; wrt the four weights
    assert flop_table(REPO / "specs" / "attention.yaml") == {
        # x @ Wq over B*T rows: 2BTDK | dWq = x.T @ dq over the flattened batch: 2BTDK
        "q": ("2*B*T*D*K", "2*B*T*D*K"),
        "k": ("2*B*T*D*K", "2*B*T*D*K"),
        "v": ("2*B*T*D*K", "2*B*T*D*K"),
        # q @ k^T: B products [T, K] @ [K, T] = 2BT^2K, / 8.0: BT^2 (the transpose is a view)
        # | d/8: BT^2, dq and dk^T: 2BT^2K each
        "scores": ("2*B*T^2*K + B*T^2", "4*B*T^2*K + B*T^2"),
        # softmax over T: 5 per element + one reciprocal per row (BT) | 4 per element
        "attn": ("5*B*T^2 + B*T", "4*B*T^2"),
        # attn @ v: 2BT^2K | dattn and dv: 2BT^2K each
        "ctx": ("2*B*T^2*K", "4*B*T^2*K"),
        # ctx @ Wo: 2BTKD | dctx and dWo: 2BTKD each
        "out": ("2*B*T*D*K", "4*B*T*D*K"),
        # out - x, square, mean (sum + one division) | mean: 1, square: 2BTD, the difference passes g
        "loss": ("3*B*T*D + 1", "2*B*T*D + 1"),
    }


def test_fan_out_and_broadcast_reductions_are_counted():
    # multipath reads h three times: two accumulations of N*D2 adds each
    d, _ = derive(REPO / "specs" / "multipath.yaml")
    accumulated = [c for s in d.steps for c in s.contributions if c.accumulated]
    assert [d.value(c.operand).name for c in accumulated] == ["h", "h"]
    d, _ = derive(REPO / "specs" / "broadcast_sum.yaml")
    (reduced,) = [c for s in d.steps for c in s.contributions if c.reduced_axes]
    assert d.value(reduced.operand).name == "y" and reduced.reduced_axes == (0,)
    table = flop_table(REPO / "specs" / "broadcast_sum.yaml")
    assert table["B"][1] == "N*M"  # dX passes through; dy sums N*M elements


def test_dim_display_and_evaluation():
    d, _ = derive(REPO / "specs" / "mlp.yaml")
    total = sum((e.total for e in cost.flops(d)), cost.ZERO)
    partial = cost.evaluate(total, {"N": 256, "D": 784})
    assert cost.show(partial, d.dim_order) == "1536*H*C + 804_096*H + 1792*C + 1024"
    full = cost.evaluate(total, {"N": 256, "D": 784, "H": 128, "C": 10})
    N, D, H, C = 256, 784, 128, 10
    assert full.value == 4 * N * D * H + 6 * N * H * C + 5 * N * H + 7 * N * C + 4 * N


def test_dominance_is_proved_for_all_sizes_or_left_open():
    a = cost.evaluate(cost.flops(derive(REPO / "specs" / "mlp.yaml")[0])[0].total, {})  # 4NDH + 2NH
    b = cost.flops(derive(REPO / "specs" / "mlp.yaml")[0])[1].total  # 3NH
    assert cost._at_least(a, b) and not cost._at_least(b, a)


# --------------------------------------------------------------------------------------------------
# memory, against what tracemalloc sees


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def traced_peak(fn):
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


def predicted(cands, sizes):
    return 8 * max(cost.evaluate(c, sizes).value for c in cands)  # float64 in these runs


@pytest.mark.parametrize(
    "name, sizes",
    [("mlp", {"N": 256, "D": 300, "H": 128, "C": 10}), ("attention", {"B": 4, "T": 32, "D": 48, "K": 16})],
)
def test_memory_replay_matches_tracemalloc(name, sizes):
    d, text = derive(REPO / "specs" / f"{name}.yaml")
    mem = cost.memory(d, text)
    module = load_module(REPO / "generated" / f"{name}.py")
    rng = np.random.default_rng(0)
    args = []
    for i in d.inputs:
        v = d.value(i)
        shape = cost_shape(v.shape, sizes)
        if v.dtype == "int":
            args.append(rng.integers(0, shape_of_labels(d, sizes), size=shape))
        else:
            args.append(rng.standard_normal(shape))
    fwd_peak, (_, cache) = traced_peak(lambda: module.forward(*args))
    fused_peak, _ = traced_peak(lambda: module.value_and_grad(*args))
    assert predicted(mem.forward_peak, sizes) == pytest.approx(fwd_peak, rel=0.2)
    assert predicted(mem.fused_peak, sizes) == pytest.approx(fused_peak, rel=0.2)
    held = 8 * sum(cost.evaluate(s, sizes).value for _, s, is_input in mem.cache if not is_input)
    bwd_peak, _ = traced_peak(lambda: module.backward(1.0, cache))
    assert predicted(mem.backward_peak, sizes) - held == pytest.approx(bwd_peak, rel=0.2)


def cost_shape(shape, sizes):
    return tuple(cost.evaluate(dim, sizes).value for dim in shape)


def shape_of_labels(d, sizes):
    return sizes.get("C", 2)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_explains_with_every_name_known(spec):
    d, text = derive(spec)
    assert cost.memory(d, text).unknown == ()
    md = explain(str(spec), spec.read_text())
    assert "## Cost" in md and "```mermaid" in md
    sym = Symbols(d)
    for i in d.wrt:  # every gradient is derived, as a formula and by its code name
        assert f"$${bar(sym.sym[i])} " in md and f"`d{d.value(i).var}`" in md


# --------------------------------------------------------------------------------------------------
# the derivation text and its line numbers


def test_mlp_reads_from_the_loss_back_to_dW1():
    md = explain("specs/mlp.yaml", (REPO / "specs" / "mlp.yaml").read_text())
    order = [
        "### `loss = softmax_cross_entropy(logits, y)`",
        "\\overline{\\mathrm{logits}} = \\frac{\\overline{\\mathrm{loss}}}{N}\\,(\\operatorname{softmax}(\\mathrm{logits}) - \\operatorname{onehot}(y))",
        "### `logits = h @ W2 + b2`",
        "\\overline{b_{2}} = \\textstyle\\sum_{\\text{axis } 0}",
        "\\overline{W_{2}} = h^{\\top} \\overline{u_{2}}",
        "### `h = relu(z1)`",
        "\\overline{z_{1}} = \\overline{h} \\odot \\mathbf{1}[h > 0]",
        "### `z1 = x @ W1 + b1`",
        "\\overline{W_{1}} = x^{\\top} \\overline{u_{1}}",
    ]
    positions = [md.index(s) for s in order]
    assert positions == sorted(positions)
    assert "softmax cross-entropy rule, notes section 2" in md
    assert "**broadcast reduced** (notes section 6): `b1` has shape [H]" in md
    assert "Derivation of the matmul rule (notes sections 3, 4, 5)" in md
    assert "x @ W1" in md and "[N, H]" in md


def test_line_numbers_point_at_the_generated_lines():
    for spec in SPECS:
        d, text = derive(spec)
        lines = module_lines(d, text)
        source = text.splitlines()
        for var, numbers in lines.assigned.items():
            assert any(re.search(rf"\b{re.escape(var)}\b", source[k - 1]) for k in numbers), (spec, var)
        for name, numbers in lines.backward.items():
            assert source[numbers[0] - 1].strip().startswith(f"# {name} = "), (spec, name)
        for name, numbers in lines.forward.items():
            # an assignment's lines (a continuation line of a long statement need not hold the =)
            assert all("=" in source[k - 1] or k - 1 in numbers for k in numbers), (spec, name)
    d, text = derive(REPO / "specs" / "mlp.yaml")
    lines = module_lines(d, text)
    source = text.splitlines()
    assert source[lines.assigned["dW1"][0] - 1].strip() == "dW1 = x.T @ dz1  # matmul rule, notes section 5"
    assert [source[k - 1].strip().split()[0] for k in lines.forward["z1"]] == ["z1", "z1"]
    assert source[lines.forward["loss"][-1] - 1].strip().startswith("loss = ")


def test_fan_out_is_called_out():
    md = explain("specs/multipath.yaml", (REPO / "specs" / "multipath.yaml").read_text())
    assert md.count("**fan-out accumulated** (notes section 3): `h`") == 2
    assert "\\mathrel{+}=" in md


def test_mermaid_graph_has_every_entry_and_the_gradient_flow():
    md = explain("specs/mlp.yaml", (REPO / "specs" / "mlp.yaml").read_text())
    block = md.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block.startswith("flowchart LR")
    for node in (
        'z1["z1 = x @ W1 + b1<br/>[N, H]"]',
        'loss["loss = softmax_cross_entropy(logits, y)<br/>[]"]',
    ):
        assert node in block
    assert "x --> z1" in block and "logits --> loss" in block
    assert 'z1 -.->|"dW1"| W1' in block and 'loss -.->|"dlogits"| logits' in block
    assert "class W1 wrt" in block and "class x input" in block


# --------------------------------------------------------------------------------------------------
# the command


def test_explain_command_md_dims_and_out(tmp_path):
    result = run("explain", REPO / "specs" / "mlp.yaml", "--dims", "N=256,D=784,H=128,C=10")
    assert result.exit_code == 0, result.output
    N, D, H, C = 256, 784, 128, 10
    total = 4 * N * D * H + 6 * N * H * C + 5 * N * H + 7 * N * C + 4 * N
    assert f"{total:,}" in result.stdout
    assert "Dominant entry at these sizes: `z1`" in result.stdout
    cache = 4 * (N * H + N * C + N)
    assert f"{cache:,}" in result.stdout
    out = tmp_path / "mlp.md"
    assert run("explain", REPO / "specs" / "mlp.yaml", "--out", out).exit_code == 0
    assert out.read_text().startswith("# mlp: the derivation of its gradients")


@pytest.mark.parametrize(
    "dims, message",
    [
        ("Q=3", "the spec has no dim 'Q'"),
        ("N", "is not NAME=SIZE"),
        ("N=0", "positive int"),
        ("N=x", "positive int"),
    ],
)
def test_explain_bad_dims_exit_2(dims, message):
    result = run("explain", REPO / "specs" / "mlp.yaml", "--dims", dims)
    assert result.exit_code == 2 and message in result.stderr


def test_explain_invalid_spec_exits_2_with_diagnostics(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs:\n  x: [N, D]\n  W: [H, C]\ngraph:\n  z: x @ W\n")
    result = run("explain", bad)
    assert result.exit_code == 2
    assert f"{bad}:5:" in result.stderr and "matmul inner dims differ" in result.stderr
    assert run("explain", tmp_path / "missing.yaml").exit_code == 2
    assert run("explain", bad, "--format", "pdf").exit_code == 2


def test_html_is_standalone(tmp_path):
    out = tmp_path / "mlp.html"
    assert run("explain", REPO / "specs" / "mlp.yaml", "--format", "html", "--out", out).exit_code == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=""", page), "the page must load nothing"
    assert "<script" not in page
    assert page.count("<math") > 10 and "<svg" in page and "```" not in page
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/1998/Math/MathML", "http://www.w3.org/2000/svg"}, urls


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "mlp.html"
    assert run("explain", REPO / "specs" / "mlp.yaml", "--format", "html", "--out", page).exit_code == 0
    profile = tmp_path / "profile"
    profile.mkdir()
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "<svg" in dom and dom.count('class="node') >= 10  # inputs and entries drawn
    assert dom.count("<math") > 10
    problems = [
        ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Refused to" in ln or "ERR_" in ln
    ]
    assert problems == []


# --------------------------------------------------------------------------------------------------
# the other derivative kinds (jvp, jacobian, hvp, hessian)


@pytest.mark.parametrize("name", ["logreg_l2", "dense_layer", "elementwise_ops", "exp_fit"])
def test_each_derivative_kind_is_explained_with_the_lines_that_apply_each_rule(name):
    import ast

    path = REPO / "specs" / f"{name}.yaml"
    _, module = derive(path)
    md = explain(str(path), path.read_text())
    tree = ast.parse(module)
    defs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    source = module.splitlines()
    kinds = [k for k in ("jvp", "jacobian", "hvp", "hessian") if k in defs]
    assert kinds and "## The other derivatives" in md and "not generated yet" not in md
    for kind in kinds:
        heading = next(line for line in md.splitlines() if line.startswith(f"### `{kind}` "))
        f = defs[kind]
        assert f"{f.lineno}-" in heading  # the function's own lines
        table = md[md.index(heading) :].split("\n### ")[0]
        rows = re.findall(r"^\| (.+?) \| (\d[0-9, -]*) \|$", table, re.M)
        assert rows, kind
        for rule, numbers in rows:
            for part in numbers.split(", "):
                first, last = (int(x) for x in (part.split("-") * 2)[:2])
                named = re.findall(r"`(\w+)`", heading.split("(", 1)[1])
                assert any(defs[n].lineno < first <= last <= defs[n].end_lineno for n in named)
                # the rule is in a comment of those lines, or in the comment line that heads their run
                k = first - 1
                while not source[k - 1].strip().startswith("#"):
                    k -= 1
                cited = rule in source[k - 1] or any(rule in source[j - 1] for j in range(first, last + 1))
                assert cited, (kind, rule, part)


def test_a_spec_without_other_kinds_says_how_to_ask_for_them():
    path = REPO / "specs" / "mlp.yaml"
    md = explain(str(path), path.read_text())
    assert "## The other derivatives" not in md and "not generated yet" not in md
    assert "`derivatives: [vjp]`" in md
