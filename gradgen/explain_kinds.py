"""The part of ``gradgen explain`` about the derivative kinds beyond ``backward`` (``jvp``, ``jacobian``,
``hvp``, ``hessian``): where each function is in the generated module, how it is composed from the
rules of the backward pass, and which rule each of its lines applies, read from the module's own
comments (so the page cannot disagree with the code).
"""

from __future__ import annotations

import ast
import re

from gradgen.explain import span

# what each kind is, in the project's words (notes section 1 for the Jacobian)
HOW = {
    "jvp": (
        "Forward mode: one pass that computes each value and, right after it, its tangent (its "
        "directional derivative along `tangents`). A tangent line applies the op's JVP rule: the same "
        "differential as the backward rule above, read forwards (d(a b) = da b + a db gives "
        "`z_dot = a_dot * b + a * b_dot`) instead of transposed."
    ),
    "jacobian": (
        "Notes section 1's J, one vectorized program for all of it: the backward pass for a batch of "
        "unit cotangents (rows) or forward mode for a batch of unit tangents (columns), whichever "
        "needs fewer; the comment at the top of the function says which and why. The unit vectors are "
        "never multiplied out: a product with them is a copy onto a diagonal."
    ),
    "hvp": (
        "Forward mode applied to the backward pass (forward-over-reverse), in one pass: the forward "
        "pass with its tangents, the backward pass, and the tangents of the backward pass. A "
        "second-order line cites the backward rule it differentiates (`..., differentiated in forward "
        "mode`). No finite differences."
    ),
    "hessian": (
        "The Hessian-vector product program for a batch of all unit vectors at once: batch row k of "
        "each `d<input>_dot` is d grad / d theta_k, and the blocks `H.a.b` are slices of those rows. "
        "Products with the unit vectors are copies onto a diagonal, never matrix products."
    ),
}
KINDS = ("jvp", "jacobian", "hvp", "hessian")
_HELPERS = {"jacobian": ("_jacobian_rows", "_jacobian_columns")}


def _functions(tree: ast.Module) -> dict[str, list[ast.FunctionDef]]:
    defs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    out = {}
    for kind in KINDS:
        if kind in defs:
            out[kind] = [defs[kind]] + [defs[h] for h in _HELPERS.get(kind, ()) if h in defs]
    return out


def _rules(source: list[str], funcs: list[ast.FunctionDef]) -> dict[str, list[int]]:
    """Rule -> the lines of the statements that cite it: in a comment at the end of the statement's
    line, or in the comment line above a run of statements (until the next comment)."""
    out: dict[str, list[int]] = {}
    for f in funcs:
        above = None
        starts = {st.lineno: st for st in ast.walk(f) if isinstance(st, ast.stmt) and st is not f}
        k = f.body[0].lineno
        while k <= f.end_lineno:
            text = source[k - 1].strip()
            if text.startswith("#"):
                above = _rule(text[1:].strip())
                k += 1
                continue
            st = starts.get(k)
            if st is None:
                k += 1
                continue
            end = st.end_lineno if not isinstance(st, (ast.If, ast.For, ast.While, ast.With)) else k
            trailing = [
                _rule(source[j - 1].split("#", 1)[1].strip()) for j in (k, end) if "#" in source[j - 1]
            ]
            rule = next((r for r in trailing if r), None) or above
            if rule:
                out.setdefault(rule, []).extend(range(k, end + 1))
            k = end + 1
    return out


def _rule(comment: str) -> str | None:
    """A comment that names a rule (not a shape ``[N, C]``, not a section ``h = tanh(x @ W)``)."""
    return comment if "rule" in comment and not re.fullmatch(r"\[.*\]", comment) else None


def kinds_section(module_text: str) -> list[str]:
    """The section, or a sentence saying that the spec asks for ``vjp`` only."""
    tree = ast.parse(module_text)
    source = module_text.splitlines()
    found = _functions(tree)
    if not found:
        return [
            "The spec asks for no derivative beyond `backward` and `value_and_grad` (`derivatives: [vjp]`); "
            "`jvp`, `jacobian`, `hvp` and `hessian` are generated when it lists them.",
            "",
        ]
    md = ["## The other derivatives", ""]
    for kind, funcs in found.items():
        lines = [k for f in funcs for k in range(f.lineno, f.end_lineno + 1)]
        names = ", ".join(f"`{f.name}`" for f in funcs)
        md += [f"### `{kind}` ({names}, lines {span(lines)})", "", HOW[kind], ""]
        rules = _rules(source, funcs)
        if rules:
            md += ["| rule | lines |", "| --- | --- |"]
            md += [f"| {rule.replace('|', '&#124;')} | {span(ks)} |" for rule, ks in rules.items()]
            md.append("")
    return md
