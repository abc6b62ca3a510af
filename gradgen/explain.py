"""``gradgen explain``: the derivation of a spec's backward pass, with shapes, rules, line numbers
of the generated module, a graph and a cost report, as Markdown (``--format md``) or one standalone
HTML page (``--format html``, see ``gradgen/html.py``).

The document is built from three small interfaces: ``steps.derivation`` (the values and backward
steps), ``texmath.Symbols`` (their LaTeX) and ``cost`` (FLOPs and memory); the line numbers come from
the black-formatted module that ``gradgen build`` writes, parsed with ``ast``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from gradgen import cost
from gradgen.dims import Dim, shape_str
from gradgen.opdocs import notes_sections
from gradgen.ops import TABLE
from gradgen.steps import Derivation, Step
from gradgen.texmath import Symbols, bar, reduce_tex

ITEMSIZE = {"float32": 4, "float64": 8}


# --------------------------------------------------------------------------------------------------
# line numbers in the generated module


@dataclass(frozen=True)
class Lines:
    forward: dict[str, list[int]]  # entry -> line numbers in forward
    backward: dict[str, list[int]]  # entry -> line numbers in backward (its block, comment included)
    assigned: dict[str, list[int]]  # variable -> backward lines that assign or update it
    source: list[str]  # the module's lines


def _written(stmt: ast.stmt) -> str | None:
    """The variable a statement writes: its target, an updated array, or an out= buffer."""
    if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, (ast.AugAssign, ast.Assign)):
        target = stmt.target if isinstance(stmt, ast.AugAssign) else stmt.targets[0]
        while isinstance(target, ast.Subscript):
            target = target.value
        return target.id if isinstance(target, ast.Name) else None
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        for kw in stmt.value.keywords:
            if kw.arg == "out" and isinstance(kw.value, ast.Name):
                return kw.value.id
        if stmt.value.args and isinstance(stmt.value.args[0], ast.Name):
            return stmt.value.args[0].id  # np.add.at(buffer, ...)
    return None


def module_lines(d: Derivation, module_text: str) -> Lines:
    tree = ast.parse(module_text)
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    source = module_text.splitlines()
    forward: dict[str, list[int]] = {}
    current = None
    for stmt in funcs["forward"].body:
        var = _written(stmt)
        if isinstance(stmt, ast.Return) or (var is None and current is None):
            continue
        entry = d.var_entry.get(var, current) if var else current
        if entry is None:
            continue
        current = entry
        forward.setdefault(entry, []).extend(range(stmt.lineno, stmt.end_lineno + 1))

    backward: dict[str, list[int]] = {}
    assigned: dict[str, list[int]] = {}
    body = funcs["backward"]
    markers = {f"# {name} = {src.splitlines()[0]}" if src else "": name for name, _, src in d.entries}
    current = None
    for k in range(body.lineno, body.end_lineno + 1):
        text = source[k - 1].strip()
        if text in markers:
            current = markers[text]
        if text.startswith("return "):
            current = None
        if current is not None:
            backward.setdefault(current, []).append(k)
    for stmt in body.body:
        var = _written(stmt)
        if var is not None:
            assigned.setdefault(var, []).extend(range(stmt.lineno, stmt.end_lineno + 1))
    return Lines(forward, backward, assigned, source)


def span(lines: list[int]) -> str:
    """``105-107`` or ``92, 94``: consecutive runs joined."""
    if not lines:
        return "none"
    lines = sorted(set(lines))
    runs, start, prev = [], lines[0], lines[0]
    for k in lines[1:] + [None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(runs)


# --------------------------------------------------------------------------------------------------
# the Mermaid graph


def _entry_deps(d: Derivation) -> dict[str, list[str]]:
    """Per graph entry, the inputs and entries its expression reads."""
    names = {v.id: v.name for v in d.values if v.name is not None}
    owner = {v.id: (v.name if v.op == "input" else v.entry) for v in d.values}
    deps: dict[str, list[str]] = {}
    for v in d.values:
        if v.op == "input" or not v.live:
            continue
        for a in v.args:
            if isinstance(a, int) and owner[a] != v.entry:
                dep = names.get(a) or owner[a]
                deps.setdefault(v.entry, [])
                if dep not in deps[v.entry]:
                    deps[v.entry].append(dep)
    return deps


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: its entity codes for the characters that would end it."""
    for ch, code in (("#", "#35;"), ("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(ch, code)
    return text


@dataclass(frozen=True)
class GraphModel:
    nodes: tuple[tuple[str, str, str, str], ...]  # (id, title, shape, kind: input|wrt|entry|output)
    edges: tuple[tuple[str, str], ...]  # forward: (from, to)
    grads: tuple[tuple[str, str, str], ...]  # gradient flow: (from, to, cotangent label)


def graph_model(d: Derivation) -> GraphModel:
    wrt = {d.value(i).name for i in d.wrt}
    live_entries = [(name, nid, src) for name, nid, src in d.entries if d.value(nid).live]
    deps = _entry_deps(d)
    used = {x for ds in deps.values() for x in ds}
    needs = {v.name or v.entry for v in d.values if v.needs_grad}
    nodes = []
    for i in d.inputs:
        v = d.value(i)
        if v.name in used:
            nodes.append((v.name, v.name, shape_str(v.shape), "wrt" if v.name in wrt else "input"))
    out = d.value(d.output)
    for name, nid, src in live_entries:
        kind = "output" if nid == d.output or name == out.name else "entry"
        nodes.append((name, f"{name} = {src}", shape_str(d.value(nid).shape), kind))
    edges, grads = [], []
    for name, _, _ in live_entries:
        for dep in deps.get(name, []):
            edges.append((dep, name))
            if dep in needs and name in needs:
                grads.append((name, dep, f"d{dep}"))
    return GraphModel(tuple(nodes), tuple(edges), tuple(grads))


def mermaid(model: GraphModel) -> str:
    out = ["flowchart LR"]
    for nid, title, shape, kind in model.nodes:
        label = f"{_mermaid_text(title)}<br/>{_mermaid_text(shape)}"
        open_, close = ("([", "])") if kind in ("input", "wrt") else ("[", "]")
        out.append(f'  {nid}{open_}"{label}"{close}')
        if kind != "entry":
            out.append(f"  class {nid} {kind}")
    for a, b in model.edges:
        out.append(f"  {a} --> {b}")
    first_grad = len(model.edges)
    for a, b, label in model.grads:
        out.append(f'  {a} -.->|"{_mermaid_text(label)}"| {b}')
    if model.grads:
        ids = ",".join(str(k) for k in range(first_grad, first_grad + len(model.grads)))
        out.append(f"  linkStyle {ids} stroke:#c0392b,color:#c0392b")
    out.append("  classDef wrt fill:#fdebd0,stroke:#c0392b")
    out.append("  classDef output fill:#d6eaf8,stroke:#2471a3")
    out.append("  classDef input fill:#f2f3f4,stroke:#7f8c8d")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# the document


def _code(lines: Lines, numbers: list[int]) -> list[str]:
    width = len(str(max(numbers)))
    return (
        ["```python"]
        + [f"{k:>{width}}  {lines.source[k - 1].strip()}" for k in sorted(set(numbers))]
        + ["```"]
    )


def _shape_note(d: Derivation, nid: int) -> str:
    return shape_str(d.value(nid).shape)


def _step_section(d: Derivation, sym: Symbols, lines: Lines, step: Step) -> list[str]:
    v = d.value(step.node)
    opdef = TABLE[v.op]
    out = []
    y = sym.sym[v.id]
    out.append(f"**Node** ${y} = {sym.definition(v)}$ (`{v.label}`, {_shape_note(d, v.id)}, op `{v.op}`)")
    out.append("")
    for c in step.contributions:
        target = d.value(c.operand)
        term = sym.contribution(step, c)
        if c.reduced_axes:
            term = reduce_tex(term, c.reduced_axes)
        op = "\\mathrel{+}=" if c.accumulated else "="
        out += [f"$${bar(sym.sym[target.id])} {op} {term}$$", ""]
        numbers = lines.assigned.get(c.cotangent, [])
        where = span(numbers)
        code_note = (
            f"line{'s' if len(numbers) > 1 else ''} {where}"
            if numbers
            else "no line of its own (the buffer pass folded it into this entry's lines)"
        )
        out.append(
            f"- `{c.cotangent}` {_shape_note(d, target.id)} from `{step.cotangent}` {shape_str(v.shape)}: "
            f"{c.rule}; {code_note}"
        )
        if c.reduced_axes:
            axes = ", ".join(f"{k} ({v.shape[k]})" for k in c.reduced_axes)
            out.append(
                f"- **broadcast reduced** (notes section 6): `{target.label}` has shape "
                f"{shape_str(target.shape)} but took part with shape {shape_str(v.shape)}, so its cotangent "
                f"is summed over axis {axes}"
            )
        if c.accumulated:
            out.append(
                f"- **fan-out accumulated** (notes section 3): `{target.label}` is used more than once; this "
                "contribution is added to the one from its later use"
            )
        out.append("")  # one block per contribution
    sections = notes_sections(opdef)
    cite = (
        f" (notes section{'s' if len(sections) > 1 else ''} {', '.join(map(str, sections))})"
        if sections
        else ""
    )
    out.append("")
    out.append(f"<details><summary>Derivation of the {v.op} rule{cite}</summary>")
    out.append("")
    out += ["    " + line for line in opdef.derivation.splitlines()]
    out.append("")
    out.append("</details>")
    out.append("")
    return out


def document(d: Derivation, module_text: str, sizes: dict[str, int], dtype: str = "float32") -> str:
    sym = Symbols(d)
    lines = module_lines(d, module_text)
    out_v = d.value(d.output)
    wrt = [d.value(i) for i in d.wrt]
    module = f"{d.name}.py"
    md: list[str] = [f"# {d.name}: the derivation of its gradients", ""]
    md.append(
        f"From `{d.path}`. Line numbers refer to `{module}` as `gradgen build` writes it. "
        f"$\\overline{{v}}$ is the cotangent $\\partial L / \\partial v$ of a value $v$: the gradient of the "
        f"objective $L$ with respect to $v$, shaped like $v$ (notes section 1). The output is "
        f"`{out_v.label}` {shape_str(out_v.shape)}; the gradients are taken with respect to "
        + ", ".join(f"`{v.name}`" for v in wrt)
        + "."
    )
    md.append("")
    md += ["## The graph", "", "```mermaid", mermaid(graph_model(d)), "```", ""]
    md.append(
        "Solid arrows: the forward pass. Dotted red arrows: the gradient flow of the backward pass, "
        "labelled with the cotangent they carry; highlighted inputs are the ones differentiated."
    )
    md.append("")
    md += _forward_section(d, sym, lines)
    md += _backward_section(d, sym, lines)
    md += cost_section(d, module_text, sizes, dtype)
    from gradgen.explain_kinds import kinds_section

    md += kinds_section(module_text)
    return "\n".join(md)


def _forward_section(d: Derivation, sym: Symbols, lines: Lines) -> list[str]:
    md = ["## Forward pass", ""]
    md.append("| entry | expression | shape | as math | lines in forward |")
    md.append("| --- | --- | --- | --- | --- |")
    for name, nid, src in d.entries:
        v = d.value(nid)
        if not v.live:
            md.append(f"| `{name}` | `{src}` | {shape_str(v.shape)} | not computed (unused) | none |")
            continue
        parts = [x for x in d.values if x.entry == name and x.live and x.op != "input"]
        math = "; ".join(f"${sym.sym[x.id]} = {sym.definition(x)}$" for x in parts)
        md.append(
            f"| `{name}` | `{src.replace('|', '&#124;')}` | {shape_str(v.shape)} | {math} | "
            f"{span(lines.forward.get(name, []))} |"
        )
    md.append("")
    inputs = ", ".join(f"`{d.value(i).name}` {shape_str(d.value(i).shape)}" for i in d.inputs)
    md.append(f"Inputs: {inputs}.")
    md.append("")
    return md


def _backward_section(d: Derivation, sym: Symbols, lines: Lines) -> list[str]:
    out_v = d.value(d.output)
    md = ["## Backward pass, from the output to the inputs", ""]
    md.append(
        f"It starts from $\\overline{{{sym.sym[out_v.id]}}}$ = `dout` (`backward`) or 1 (`value_and_grad`), "
        "and visits the nodes in reverse. Each node sends a cotangent contribution to every operand that "
        "leads to a differentiated input; `+=` marks a value used more than once, whose contributions "
        "add up."
    )
    md.append("")
    by_entry: dict[str, list[Step]] = {}
    for step in d.steps:
        by_entry.setdefault(d.value(step.node).entry, []).append(step)
    for name, _, src in reversed(d.entries):
        steps = by_entry.get(name)
        if not steps:
            continue
        numbers = lines.backward.get(name, [])
        md.append(f"### `{name} = {src}` (backward lines {span(numbers)})")
        md.append("")
        for step in steps:
            md += _step_section(d, sym, lines, step)
        if numbers:
            md += _code(lines, numbers)
            md.append("")
    grads = ", ".join(f"$\\overline{{{sym.sym[i]}}}$ = `d{d.value(i).var}`" for i in d.wrt)
    md.append(f"`backward` returns {grads}, each shaped like its input.")
    md.append("")
    return md


# --------------------------------------------------------------------------------------------------
# the cost report


def cost_section(d: Derivation, module_text: str, sizes: dict[str, int], dtype: str) -> list[str]:
    order = d.dim_order
    entries = cost.flops(d)
    total_f = sum((e.forward for e in entries), Dim.const(0))
    total_b = sum((e.backward for e in entries), Dim.const(0))
    full = all(s in sizes for s in order)
    given = ", ".join(f"{k}={v}" for k, v in sizes.items())
    md = ["## Cost", ""]
    md.append(
        "FLOPs as `gradgen ops NAME` counts them for each op (a matrix product `[M, K] @ [K, N]` is "
        "`2*M*K*N`, an elementwise operation one per element, moving data nothing)."
        + (f" Evaluated at {given}." if sizes else " Pass `--dims N=256,D=784` to evaluate them.")
    )
    md.append("")
    head = "| entry | forward | backward | total |" + (" at the given sizes |" if sizes else "")
    md += [head, "| --- | --- | --- | --- |" + (" --- |" if sizes else "")]

    def row(name, f, b):
        cells = [f"`{cost.show(f, order)}`", f"`{cost.show(b, order)}`", f"`{cost.show(f + b, order)}`"]
        if sizes:
            cells.append(_at(f + b, sizes, order, "FLOP"))
        return f"| {name} | " + " | ".join(cells) + " |"

    for e in entries:
        md.append(row(f"`{e.name}`", e.forward, e.backward))
    md.append(row("**total**", total_f, total_b))
    md.append("")
    md.append(_dominant(entries, sizes, order, full))
    md.append("")
    md += _memory_lines(d, module_text, sizes, dtype)
    return md


def _at(value: Dim, sizes: dict[str, int], order, unit: str) -> str:
    ev = cost.evaluate(value, sizes)
    if ev.is_const:
        return f"{ev.value:,} ({cost.human(ev.value, unit)})"
    return f"`{cost.show(ev, order)}`"


def _dominant(entries, sizes, order, full) -> str:
    if full:
        values = {e.name: cost.evaluate(e.total, sizes).value for e in entries}
        top = max(values, key=values.get)
        total = sum(values.values()) or 1
        return f"Dominant entry at these sizes: `{top}`, {100 * values[top] / total:.0f}% of all FLOPs."
    leaders = [e for e in entries if all(cost._at_least(e.total, o.total) for o in entries)]
    if leaders:
        return f"Dominant entry: `{leaders[0].name}` (at least as costly as every other entry for any sizes)."
    # the entries whose cost no other entry provably exceeds
    open_ = [
        e.name for e in entries if not any(cost._at_least(o.total, e.total) and o is not e for o in entries)
    ]
    names = ", ".join(f"`{n}`" for n in open_)
    return (
        f"Which entry dominates depends on the sizes: one of {names}; pass every dim with `--dims` to decide."
    )


def _memory_lines(d: Derivation, module_text: str, sizes, dtype) -> list[str]:
    order = d.dim_order
    item = ITEMSIZE[dtype]
    mem = cost.memory(d, module_text)

    def bytes_(elements: Dim) -> Dim:
        return Dim.const(item) * elements

    def cell(elements: Dim) -> str:
        text = f"`{cost.show(bytes_(elements), order)}` bytes"
        return text + (f" = {_at(bytes_(elements), sizes, order, 'B')}" if sizes else "")

    def peak(cands: tuple[Dim, ...]) -> str:
        if sizes and all(s in sizes for s in order):
            worst = max(cands, key=lambda c: cost.evaluate(c, sizes).value)
            return cell(worst)
        shown = [f"`{cost.show(bytes_(c), order)}`" for c in cands]
        return (shown[0] if len(shown) == 1 else "the largest of " + ", ".join(shown)) + " bytes"

    md = [
        f"Memory, for {dtype} arrays ({item} bytes an element; int labels, indices and bool masks counted alike):",
        "",
    ]
    own = [(n, s) for n, s, is_input in mem.cache if not is_input]
    held = sum((s for _, s in own), Dim.const(0))
    md.append(
        f"- held in the cache between `forward` and `backward`: {cell(held)}, in "
        + ", ".join(f"`{n}` {_fmt_elems(s, order)}" for n, s in own)
        + ("" if own else "nothing")
    )
    kept = [n for n, _, is_input in mem.cache if is_input]
    if kept:
        md.append(f"  (the cache also keeps the caller's own {', '.join(f'`{n}`' for n in kept)} alive)")
    md.append(f"- peak of `forward`'s own arrays: {peak(mem.forward_peak)}")
    md.append(f"- peak of `backward`, the cache included: {peak(mem.backward_peak)}")
    if mem.fused_peak:
        md.append(f"- peak of `value_and_grad` (one training step): {peak(mem.fused_peak)}")
    md.append("")
    md.append(
        "Arrays are counted from their assignment until their name is rebound or the function returns; "
        "views, `out=` and in-place updates allocate nothing, and temporaries inside one expression are "
        "not counted. The inputs themselves are not counted."
    )
    md.append("")
    return md


def _fmt_elems(elements: Dim, order) -> str:
    return f"({cost.show(elements, order)} elements)"


# --------------------------------------------------------------------------------------------------
# entry point


def parse_dims(text: str | None, known: tuple[str, ...]) -> dict[str, int]:
    """``N=256,D=784`` -> sizes; raises ValueError naming what is wrong."""
    sizes: dict[str, int] = {}
    if not text:
        return sizes
    for part in text.split(","):
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name:
            raise ValueError(f"{part.strip()!r} is not NAME=SIZE")
        if name not in known:
            raise ValueError(f"the spec has no dim {name!r}; its dims are {', '.join(known) or 'none'}")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"the size of {name} must be a positive int, not {value!r}")
        sizes[name] = int(value)
    return sizes


def explain(path: str, text: str, fmt: str = "md", dims: str | None = None, dtype: str = "float32") -> str:
    """The explanation of one spec; raises SpecError for an invalid spec, ValueError for bad --dims."""
    from gradgen.pipeline import build_text, typed_text
    from gradgen.steps import derivation

    d = derivation(typed_text(path, text)[0])
    sizes = parse_dims(dims, d.dim_order)
    module = dict(build_text(path, text).files)[f"{d.name}.py"]
    md = document(d, module, sizes, dtype)
    if fmt == "md":
        return md
    from gradgen.html import page

    return page(md, graph_model(d), title=f"{d.name}: the derivation of its gradients")
