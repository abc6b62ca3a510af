"""LaTeX for the derivation: a symbol per value, each node's definition, each VJP contribution.

Notation: ``\\overline{v}`` is the cotangent dL/dv of a value v (shaped like v, notes section 1).
Values the spec names keep their names (``W1`` is :math:`W_{1}`); the parts of an entry's expression
that have no name are called u_1, u_2, ... in forward order.
"""

from __future__ import annotations

import re

from gradgen.dims import Dim
from gradgen.ir import Const
from gradgen.steps import Contribution, Derivation, Step, Value


def name_tex(name: str) -> str:
    """``W1`` -> ``W_{1}``, ``Wq`` -> ``W_{q}``, ``x`` -> ``x``, ``logits`` -> ``\\mathrm{logits}``."""
    m = re.fullmatch(r"([A-Za-z])(\d+)", name)
    if m:
        return f"{m[1]}_{{{m[2]}}}"
    m = re.fullmatch(r"([A-Z])([a-z]{1,2})", name)
    if m:
        return f"{m[1]}_{{\\mathrm{{{m[2]}}}}}"
    if len(name) == 1:
        return name
    return "\\mathrm{" + name.replace("_", "\\_") + "}"


def _index_tex(items) -> str:
    from gradgen.ops_index import index_text

    text = index_text(items).replace("_", "\\_").replace("...", "\\dots")
    return f"\\texttt{{{text}}}"


def bar(sym: str) -> str:
    return f"\\overline{{{sym}}}"


def dim_tex(d: Dim) -> str:
    return str(d).replace("*", " ")


class Symbols:
    def __init__(self, d: Derivation):
        self.d = d
        self.sym: dict[int, str] = {}
        k = 0
        for v in d.values:
            if v.name is not None:
                self.sym[v.id] = name_tex(v.name)
            elif v.live:
                k += 1
                self.sym[v.id] = f"u_{{{k}}}"

    def of(self, operand) -> str:
        if isinstance(operand, Const):
            return operand.text
        return self.sym[operand]

    def group(self, operand) -> str:
        """The symbol, parenthesised when it is a negative number."""
        s = self.of(operand)
        return f"({s})" if s.startswith("-") else s

    # -- forward -----------------------------------------------------------------------------------
    def definition(self, v: Value) -> str:
        a = [self.group(x) for x in v.args]
        attr = dict(v.attrs)
        op = v.op
        infix = {"add": "+", "sub": "-", "mul": "\\odot", "div": "\\oslash"}
        if op in infix:
            mid = infix[op]
            if op == "mul" and any(isinstance(x, Const) for x in v.args):
                mid = "\\,"
            return f"{a[0]} {mid} {a[1]}"
        if op == "matmul":
            return f"{a[0]}\\,{a[1]}"
        if op == "neg":
            return f"-{a[0]}"
        if op == "pow":
            return f"{a[0]}^{{{attr['k']}}}"
        if op == "square":
            return f"{a[0]}^{{2}}"
        if op in ("exp", "log", "tanh"):
            return f"\\{op}({a[0]})"
        if op == "sqrt":
            return f"\\sqrt{{{a[0]}}}"
        if op == "log_sigmoid":
            return f"\\log \\sigma({a[0]})"
        if op == "softplus":
            return f"\\operatorname{{softplus}}({a[0]})"
        if op == "abs":
            return f"|{a[0]}|"
        if op in ("sin", "cos"):
            return f"\\{op}({a[0]})"
        if op == "power":
            return f"{a[0]}^{{{a[1]}}}"
        if op == "gelu":
            return (
                f"{a[0]}\\,\\Phi({a[0]})"
                if attr.get("approximate") != "tanh"
                else f"\\operatorname{{gelu}}_{{\\tanh}}({a[0]})"
            )
        if op == "transpose" and attr.get("axes") is None:
            return f"{a[0]}^{{\\top}}"
        if op in ("sum", "mean", "logsumexp", "max", "min", "var", "std"):
            axes = attr.get("axis")
            where = "" if axes is None else f"_{{\\text{{axis }} {axes}}}"
            return f"\\operatorname{{{op}}}{where}({a[0]})"
        if op in _MASK_TEX:
            if op == "logical_not":
                return f"\\lnot {a[0]}"
            return f"{a[0]} {_MASK_TEX[op]} {a[1]}"
        if op == "where":
            return f"\\operatorname{{where}}({a[0]}, {a[1]}, {a[2]})"
        if op == "softmax_cross_entropy":
            return f"\\operatorname{{CE}}(\\operatorname{{softmax}}({a[0]}), {a[1]})"
        if op == "index":
            return f"{a[0]}{_index_tex(attr['index'])}"
        if op == "split":
            return f"\\operatorname{{split}}_{{{attr['piece'] + 1}}}({a[0]})"
        args = ", ".join(a)
        return f"\\operatorname{{{op.replace('_', chr(92) + '_')}}}({args})"

    # -- backward ----------------------------------------------------------------------------------
    def contribution(self, step: Step, c: Contribution) -> str:
        """The term this step sends to one operand, in the output's shape before any broadcast sum."""
        v = self.d.value(step.node)
        g = bar(self.sym[v.id])
        y = self.sym[v.id]
        pos = c.positions
        i = pos[0]
        args = v.args
        a = [self.group(x) for x in args]
        other = a[1 - i] if len(args) == 2 else None
        op = v.op
        if op == "add":
            return g
        if op == "sub":
            return g if i == 0 else f"-{g}"
        if op == "mul":
            if len(pos) == 2:
                return f"2\\,{g} \\odot {a[0]}"
            return f"{g} \\odot {other}" if not isinstance(args[1 - i], Const) else f"{other}\\,{g}"
        if op == "div":
            return f"{g} \\oslash {a[1]}" if i == 0 else f"-{g} \\odot {y} \\oslash {a[1]}"
        if op == "neg":
            return f"-{g}"
        if op == "pow":
            k = dict(v.attrs)["k"]
            return f"{k}\\,{g} \\odot {a[0]}^{{{k - 1}}}"
        simple = {
            "exp": f"{g} \\odot {y}",
            "log": f"{g} \\oslash {a[0]}",
            "sqrt": f"{g} \\oslash (2\\,{y})",
            "tanh": f"{g} \\odot (1 - {y} \\odot {y})",
            "sigmoid": f"{g} \\odot {y} \\odot (1 - {y})",
            "log_sigmoid": f"-{g} \\odot \\operatorname{{expm1}}({y})",
            "softplus": f"-{g} \\odot \\operatorname{{expm1}}(-{y})",
            "relu": f"{g} \\odot \\mathbf{{1}}[{y} > 0]",
            "square": f"2\\,{g} \\odot {a[0]}",
            "abs": f"{g} \\odot \\operatorname{{sign}}({a[0]})",
            "softmax": f"{y} \\odot ({g} - \\textstyle\\sum_{{\\text{{axis}}}} {g} \\odot {y})",
            "log_softmax": f"{g} - \\exp({y}) \\odot \\textstyle\\sum_{{\\text{{axis}}}} {g}",
            "reshape": f"\\operatorname{{reshape}}({g})",
            "concatenate": f"{g}[\\text{{slice }} {i + 1}]",
            "take": f"\\operatorname{{scatter\\_add}}_{{{a[1] if len(a) > 1 else ''}}}({g})",
            "take_along_axis": f"\\operatorname{{scatter\\_along}}_{{{a[1] if len(a) > 1 else ''}}}({g})",
            "sin": f"{g} \\odot \\cos({a[0]})",
            "cos": f"-{g} \\odot \\sin({a[0]})",
            "log1p": f"{g} \\oslash (1 + {a[0]})",
            "expm1": f"{g} \\odot \\exp({a[0]})",
            "erf": f"\\tfrac{{2}}{{\\sqrt{{\\pi}}}}\\,{g} \\odot \\exp(-{a[0]}^{{2}})",
            "gelu": f"{g} \\odot \\operatorname{{gelu}}'({a[0]})",
            "stack": f"{g}[\\text{{slice }} {i + 1}]",
            "pad": f"\\operatorname{{crop}}({g})",
            "max_pool2d": f"\\operatorname{{route\\_to\\_max}}({g})",
            "avg_pool2d": f"\\operatorname{{spread}}({g})",
            "conv1d": CONV_TEX[min(i, 1)].format(g=g, x=a[0], w=a[-1]),
            "conv2d": CONV_TEX[min(i, 1)].format(g=g, x=a[0], w=a[-1]),
        }
        if op in simple:
            return simple[op]
        if op == "power":
            if i == 0:
                return f"{g} \\odot {a[1]} \\odot {a[0]}^{{{a[1]} - 1}}"
            return f"{g} \\odot {y} \\odot \\log {a[0]}"
        if op == "clip":
            inside = [
                f"{a[1]} \\le {a[0]} \\le {a[2]}",
                f"{a[0]} < {a[1]} \\le {a[2]}",
                f"\\max({a[0]}, {a[1]}) > {a[2]}",
            ]
            return f"{g} \\odot \\mathbf{{1}}[{inside[i]}]"
        if op in ("maximum", "minimum"):
            cmp = {("maximum", 0): "\\ge", ("maximum", 1): "<", ("minimum", 0): "\\le", ("minimum", 1): ">"}
            return f"{g} \\odot \\mathbf{{1}}[{a[0]} {cmp[(op, i)]} {a[1]}]"
        if op == "where":  # i is 1 (a) or 2 (b); a mask gets nothing
            return f"{g} \\odot \\mathbf{{1}}[{'' if i == 1 else chr(92) + 'lnot '}{a[0]}]"
        if op == "sum":
            return f"\\operatorname{{broadcast}}({g})"
        if op == "mean":
            return f"\\operatorname{{broadcast}}({g}) / n"
        if op == "logsumexp":
            return f"\\operatorname{{broadcast}}({g}) \\odot \\exp({a[0]} - {y})"
        if op == "var":
            return f"\\tfrac{{2}}{{n - \\delta}} \\operatorname{{broadcast}}({g}) \\odot ({a[0]} - \\bar{{{a[0]}}})"
        if op == "std":
            return f"\\operatorname{{broadcast}}({g} \\oslash ((n - \\delta)\\,{y})) \\odot ({a[0]} - \\bar{{{a[0]}}})"
        if op in ("max", "min"):  # split evenly among the tied extremes
            return f"\\operatorname{{broadcast}}({g}) \\odot \\operatorname{{share}}_{{\\{op}}}({a[0]})"
        if op == "transpose":
            return (
                f"{g}^{{\\top}}"
                if dict(v.attrs).get("axes") is None
                else f"\\operatorname{{transpose}}^{{-1}}({g})"
            )
        if op == "softmax_cross_entropy":
            return self._sce(v, g, a, i)
        if op == "matmul":
            return self._matmul(v, g, a, i)
        if op == "einsum":
            return f"\\operatorname{{einsum}}({g}, \\dots)"
        if op in ("index", "split"):  # zeros shaped like a, g written where a was picked
            where = (
                _index_tex(dict(v.attrs)["index"]) if op == "index" else f"_{{{dict(v.attrs)['piece'] + 1}}}"
            )
            return f"\\operatorname{{scatter}}{where}({g})"
        raise KeyError(op)

    def _sce(self, v: Value, g: str, a: list[str], i: int) -> str:
        logits = self.d.value(v.args[0])
        labels = self.d.value(v.args[1])
        scale = g
        if dict(v.attrs).get("reduction", "mean") == "mean" and len(logits.shape) == 2:
            scale = f"\\frac{{{g}}}{{{dim_tex(logits.shape[0])}}}"
        if i == 1:
            return f"-{scale}\\,\\log\\operatorname{{softmax}}({a[0]})"
        target = f"\\operatorname{{onehot}}({a[1]})" if labels.dtype == "int" else a[1]
        return f"{scale}\\,(\\operatorname{{softmax}}({a[0]}) - {target})"

    def _matmul(self, v: Value, g: str, a: list[str], i: int) -> str:
        ra, rb = (len(self.d.value(x).shape) for x in v.args)
        if ra == 1 and rb == 1:
            return f"{g}\\,{a[1 - i]}"
        if ra == 2 and rb == 1 and i == 0:
            return f"{g} \\otimes {a[1]}"  # notes section 3
        if ra == 1 and rb == 2 and i == 1:
            return f"{a[0]} \\otimes {g}"  # notes section 4
        if i == 0:
            return f"{g}\\,{a[1]}^{{\\top}}"
        if ra > 2 and rb == 2:
            return f"\\textstyle\\sum_{{\\text{{batch}}}} {a[0]}^{{\\top}} {g}"
        return f"{a[0]}^{{\\top}} {g}"


# comparisons and the logical ops on masks, as LaTeX relations
_MASK_TEX = {
    "greater": ">",
    "greater_equal": "\\ge",
    "less": "<",
    "less_equal": "\\le",
    "equal": "=",
    "not_equal": "\\ne",
    "logical_and": "\\land",
    "logical_or": "\\lor",
    "logical_not": "\\lnot",
}
# a convolution's cotangents: g times the weights added back per offset (col2im), g against the columns
CONV_TEX = (
    "\\operatorname{{col2im}}({g} \\cdot {w})",
    "\\textstyle\\sum_{{n, \\text{{pos}}}} {g} \\otimes \\operatorname{{windows}}({x})",
)


def reduce_tex(term: str, axes: tuple[int, ...]) -> str:
    """A broadcast operand's cotangent: the term summed over the broadcast axes (notes section 6)."""
    which = ", ".join(str(k) for k in axes)
    word = "axis" if len(axes) == 1 else "axes"
    return f"\\textstyle\\sum_{{\\text{{{word} }} {which}}} \\left({term}\\right)"
