"""What ``gradgen ops`` says about each op: its signature, shape rule and gradient, in words.

The op table (``gradgen/ops.py``) holds what the code generator needs, including each op's rule text
and derivation; this module adds the descriptions a person reads, one row per op, and the signature
built from the op's parameters.  ``tests/test_ops_cli.py`` keeps the two tables in step.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from gradgen.ops import TABLE, OpDef


@dataclass(frozen=True)
class OpDoc:
    summary: str
    shape: str
    vjp: str  # g is the cotangent of the output y


OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "power": "**"}
OPERATORS |= {"greater": ">", "greater_equal": ">=", "less": "<", "less_equal": "<=", "equal": "=="}
OPERATORS |= {"not_equal": "!=", "logical_and": "&", "logical_or": "|"}

DOCS: dict[str, OpDoc] = {
    "add": OpDoc(
        "elementwise sum",
        "NumPy broadcasting, decided on symbolic dims at build time",
        "g to both operands; a broadcast operand gets g summed over its broadcast axes (notes section 6)",
    ),
    "sub": OpDoc("elementwise difference", "as +", "g to a and -g to b, each reduced as for +"),
    "mul": OpDoc(
        "elementwise (Hadamard) product",
        "as +",
        "g * b to a and g * a to b; a broadcast row y in y * X gets (g * X) summed over the rows "
        "(notes section 7); a * a gives 2 a g",
    ),
    "div": OpDoc("elementwise quotient", "as +", "g / b to a and -g * y / b to b (the output y is reused)"),
    "neg": OpDoc("negation", "the operand's shape", "-g"),
    "pow": OpDoc(
        "power with a number literal exponent k (any sign, int or float)",
        "the operand's shape",
        "k * a ** (k - 1) * g",
    ),
    "matmul": OpDoc(
        "matrix product with numpy.matmul semantics",
        "[N, K] @ [K, M] -> [N, M]; [N, K] @ [K] -> [N]; [K] @ [K, M] -> [M]; [K] @ [K] -> []; batched "
        "(rank >= 3): the batch dims broadcast",
        "dA = g @ B.T and dB = A.T @ g (notes section 5); np.outer(g, x) for matrix @ vector (section 3), "
        "np.outer(x, g) for vector @ matrix (section 4); batched: per batch element, summed over broadcast "
        "batch axes",
    ),
    "exp": OpDoc("elementwise exponential", "the operand's shape", "g * y (the output is reused)"),
    "log": OpDoc("elementwise natural logarithm", "the operand's shape", "g / a"),
    "sqrt": OpDoc("elementwise square root", "the operand's shape", "g / (2 * y) (the output is reused)"),
    "tanh": OpDoc("elementwise hyperbolic tangent", "the operand's shape", "g * (1 - y * y)"),
    "sigmoid": OpDoc(
        "logistic function, computed from the smaller tail exp(-|a|) / (1 + exp(-|a|)): never overflows, "
        "a few ulps over the whole range",
        "the operand's shape",
        "g * t * (1 - t), t the tail saved by the forward pass",
    ),
    "log_sigmoid": OpDoc(
        "log(sigmoid(a)) as min(a, 0) - log1p(exp(-|a|)); log(sigmoid(z)) and log(1 - sigmoid(z)) are "
        "rewritten to it",
        "the operand's shape",
        "-g * expm1(y) (the output is reused)",
    ),
    "softplus": OpDoc(
        "log(1 + exp(a)) as max(a, 0) + log1p(exp(-|a|)); log(1 + exp(z)) is rewritten to it",
        "the operand's shape",
        "-g * expm1(-y) (the output is reused)",
    ),
    "relu": OpDoc("max(a, 0)", "the operand's shape", "g * (y > 0); relu'(0) = 0"),
    "square": OpDoc("elementwise square", "the operand's shape", "g * 2 * a"),
    "abs": OpDoc("elementwise absolute value", "the operand's shape", "g * sign(a); abs'(0) = 0"),
    "maximum": OpDoc(
        "elementwise maximum; either operand may be a number (not both)",
        "as +",
        "g where a >= b to a, elsewhere to b (ties go to a)",
    ),
    "minimum": OpDoc(
        "elementwise minimum; either operand may be a number (not both)",
        "as +",
        "g where a <= b to a, elsewhere to b (ties go to a)",
    ),
    **{
        name: OpDoc(
            f"elementwise comparison a {symbol} b, a mask (bool); either operand may be a number",
            "as +; a bool tensor",
            "none: a mask is never differentiated (no cotangent reaches a or b through it)",
        )
        for name, symbol in (
            ("greater", ">"),
            ("greater_equal", ">="),
            ("less", "<"),
            ("less_equal", "<="),
            ("equal", "=="),
            ("not_equal", "!="),
        )
    },
    "logical_and": OpDoc(
        "elementwise and of two masks", "as +; a bool tensor", "none: a mask is never differentiated"
    ),
    "logical_or": OpDoc(
        "elementwise or of two masks", "as +; a bool tensor", "none: a mask is never differentiated"
    ),
    "logical_not": OpDoc(
        "elementwise not of a mask", "the operand's shape", "none: a mask is never differentiated"
    ),
    "where": OpDoc(
        "a where the mask cond holds, b elsewhere (np.where); a and b may be numbers (where(m, 1.0, 0.0) is "
        "the mask as numbers of the computation's dtype)",
        "cond, a and b broadcast together (NumPy broadcasting)",
        "np.where(cond, g, 0) to a and np.where(cond, 0, g) to b (g * cond and g * ~cond when cond is "
        "an input), each summed over its broadcast axes (notes section 6); nothing to cond",
    ),
    "sum": OpDoc(
        "sum over an axis, a tuple of axes, or all axes (axis=None)",
        "the reduced axes removed, or kept as 1 with keepdims=True",
        "g broadcast back over the summed axes",
    ),
    "mean": OpDoc("mean over axes, as sum", "as sum", "g / count broadcast back over the averaged axes"),
    "logsumexp": OpDoc(
        "log(sum(exp(a))) along axes, shifted by the max so that it never overflows",
        "as sum",
        "g * exp(a - y), g broadcast back over the reduced axes",
    ),
    "max": OpDoc(
        "the largest entry over an axis, a tuple of axes, or all axes (axis=None), as numpy.max",
        "as sum",
        "g to each slice's largest entry; k tied entries get g / k each (torch's amax convention)",
    ),
    "min": OpDoc(
        "the smallest entry over an axis, a tuple of axes, or all axes (axis=None), as numpy.min",
        "as sum",
        "g to each slice's smallest entry; k tied entries get g / k each (torch's amin convention)",
    ),
    "var": OpDoc(
        "variance over axes as numpy.var (two passes): sum((a - mean)^2) / (n - ddof); ddof=1 is the "
        "unbiased estimate",
        "as sum; a slice must hold more than ddof entries (checked at run time)",
        "2 (a - mean) g / (n - ddof), g broadcast back",
    ),
    "std": OpDoc(
        "standard deviation over axes as numpy.std: sqrt(var(a, axis, ddof=ddof))",
        "as var",
        "(a - mean) g / ((n - ddof) y), g and y broadcast back; 0 where y = 0 (a slice of equal entries)",
    ),
    "argmax": OpDoc(
        "the index of the largest entry along one axis (the first at a tie), or into the flattened array "
        "with axis=None, as numpy.argmax: an int tensor for take, take_along_axis or the labels of "
        "softmax_cross_entropy, indexing an axis of the size it ranges over",
        "the axis removed, or kept as 1 with keepdims=True; axis=None: a scalar",
        "none: an int result is never differentiated (no gradient flows into a)",
    ),
    "argmin": OpDoc(
        "the index of the smallest entry, as argmax",
        "as argmax",
        "none: an int result is never differentiated (no gradient flows into a)",
    ),
    "softmax": OpDoc(
        "softmax along one axis, shifted by the max",
        "the operand's shape",
        "y * (g - sum(g * y)) along the axis",
    ),
    "log_softmax": OpDoc(
        "log of the softmax along one axis, shifted by the max",
        "the operand's shape",
        "g - exp(y) * sum(g) along the axis",
    ),
    "softmax_cross_entropy": OpDoc(
        "cross-entropy of softmax(logits) against labels, fused; int labels are class indices, float "
        "labels are one-hot rows or probabilities",
        "logits [C] or [N, C]; int labels shaped like the logits without the class axis, float labels "
        "shaped like the logits; the result is a scalar",
        "logits: (softmax(logits) - onehot(labels)) * g, divided by N for reduction='mean' (notes "
        "section 2), with 1 subtracted at each row's label instead of a one-hot matrix; float labels: "
        "-log_softmax(logits) * g",
    ),
    "transpose": OpDoc(
        "numpy.transpose; a.T reverses the axes",
        "the axes permuted",
        "g transposed by the inverse permutation",
    ),
    "reshape": OpDoc(
        "numpy reshape; the shape holds dim names, ints and at most one -1",
        "the new shape; the element counts must be provably equal",
        "g reshaped back to the operand's shape",
    ),
    "concatenate": OpDoc(
        "numpy.concatenate of a tuple or list of tensors",
        "operands of one rank, equal except along the axis, where the sizes add up",
        "g split back into one slice per operand",
    ),
    "take": OpDoc(
        "rows (or slices along axis) picked by an int index tensor: an embedding lookup",
        "a.shape[:axis] + indices.shape + a.shape[axis+1:]",
        "g scatter-added (np.add.at) into zeros shaped like a; repeated indices add up",
    ),
    "take_along_axis": OpDoc(
        "numpy.take_along_axis: entries picked along an axis by int indices of the same rank (the per-row "
        "label pick with [N, 1] indices)",
        "as a, with the indices' length along the axis; off the axis a and the indices broadcast",
        "g scatter-added into zeros shaped like a (an assignment when no entry can be picked twice)",
    ),
    "index": OpDoc(
        "static indexing a[...]: ints (a position; negative counts from the end), slices start:stop:step "
        "(ints, dims, or + - * of those; a positive step), None (a new axis) and ... (the axes left); "
        "a view",
        "one axis per slice (its length), none for an int, 1 for None; bounds are proven within their "
        "axes at build time, or checked when the module runs (K <= D for a[:, :K] on [N, D])",
        "g written into zeros shaped like a at the indexed positions",
    ),
    "split": OpDoc(
        "the pieces of a along an axis, named by a tuple target: sections is a count of equal pieces "
        "or a list of the pieces' sizes (as torch.split, not numpy.split's split points); each piece "
        "is a view",
        "a's shape with the axis cut to the piece's size; the sizes add up to the axis",
        "each piece's g written into zeros shaped like a at its slice; the pieces' cotangents add up",
    ),
    "stack": OpDoc(
        "numpy.stack of a tuple or list of tensors of one shape along a new axis",
        "the operands' shape with a new axis of length (number of operands) at axis",
        "operand k gets g at position k of the new axis (a view)",
    ),
    "einsum": OpDoc(
        'Einstein summation with an explicit output, as in einsum("ij,jk->ik", a, b)',
        "the output subscripts' dims; every index has one size in all operands",
        "for each operand, an einsum of g with the other operands; indices only in that operand are "
        "broadcast back",
    ),
    # issue 9 (gradgen/ops_elem.py)
    "sin": OpDoc("elementwise sine", "the operand's shape", "g * cos(a)"),
    "cos": OpDoc("elementwise cosine", "the operand's shape", "-g * sin(a)"),
    "log1p": OpDoc("log(1 + a), exact for small a (np.log1p)", "the operand's shape", "g / (1 + a)"),
    "expm1": OpDoc("exp(a) - 1, exact for small a (np.expm1)", "the operand's shape", "g * exp(a)"),
    "erf": OpDoc(
        "the error function, within 4 ulps of math.erf (W. J. Cody's rational approximations, "
        "defined in the generated module: no SciPy)",
        "the operand's shape",
        "g * 2 / sqrt(pi) * exp(-a * a)",
    ),
    "gelu": OpDoc(
        'GELU, a * Phi(a) (approximate="none", as torch) or 0.5 a (1 + tanh(sqrt(2 / pi) (a + 0.044715 '
        'a^3))) (approximate="tanh")',
        "the operand's shape",
        "g * (Phi(a) + a * phi(a)), Phi saved by the forward pass; tanh form: from the saved tanh",
    ),
    "clip": OpDoc(
        "np.clip: a limited to [lo, hi]; lo and hi tensors or numbers (lo > hi gives hi everywhere)",
        "NumPy broadcasting of a, lo and hi",
        "g to a where lo <= a <= hi (bounds included), to lo where a < lo, to hi where a > hi",
    ),
    "power": OpDoc(
        "power with a tensor exponent b; the base a tensor or a positive number",
        "NumPy broadcasting",
        "g * b * a ** (b - 1) to a, g * y * log(a) to b (the output reused)",
    ),
    "conv1d": OpDoc(
        "1-d cross-correlation (torch's conv1d): input [N, C, W], weights [O, C/groups, K]",
        "[N, O, (W + 2*padding - dilation*(K-1) - 1) // stride + 1]; literal kernel sizes; a symbolic "
        "size must have every symbolic term divisible by the stride",
        "dx: g times the weights, each kernel offset's slice added back where it reads (col2im); dw: g "
        "contracted with the input's columns (im2col, copied once in forward)",
    ),
    "conv2d": OpDoc(
        "2-d cross-correlation (torch's conv2d): input [N, C, H, W], weights [O, C/groups, KH, KW]",
        "[N, O, H', W'] with H' = (H + 2*padding - dilation*(KH-1) - 1) // stride + 1, per axis",
        "dx: g times the weights, each kernel offset's slice added back where it reads (col2im); dw: g "
        "contracted with the input's columns (im2col, copied once in forward)",
    ),
    "max_pool2d": OpDoc(
        "the maximum of each window over the last two axes (padding counts as -inf)",
        "the last two axes become (size + 2*padding - kernel) // stride + 1; stride defaults to kernel_size",
        "each window's g added at its first maximum (torch's choice at ties), one unrolled line per "
        "kernel offset",
    ),
    "avg_pool2d": OpDoc(
        "the mean of each window over the last two axes (padding counts as zeros, in the count)",
        "as max_pool2d",
        "g / (kh*kw) of each window added at every position it reads",
    ),
    "pad": OpDoc(
        "numpy.pad with a constant value",
        "each axis grows by its (before, after) widths",
        "g without the padding (a view)",
    ),
}


def _default(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def signature(name: str) -> str:
    """How the op is written in a spec: ``a @ b``, ``sum(a, axis=None, keepdims=False)``."""
    d = TABLE[name]
    if name in OPERATORS:
        return f"a {OPERATORS[name]} b"
    if name == "neg":
        return "-a"
    if name == "logical_not":
        return "~a"
    if name == "pow":
        return "a ** k"
    if name == "index":
        return "a[index]"
    if name == "split":
        return "a1, a2, ...: split(a, sections, axis=0)"
    parts = []
    for p in d.params:
        if p.kind == "tensors" and d.varargs:
            parts.append("a, b, ...")
        elif p.kind == "tensors":
            parts.append("(a, b, ...)")
        elif p.kind == "str" and name == "einsum":
            parts.append('"ij,jk->ik"')
        elif p.required or p.kind in ("tensor", "operand"):
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={_default(p.default)}")
    text = f"{name}({', '.join(parts)})"
    return text + "   (also a.T)" if name == "transpose" else text


_KINDS = {
    "tensor": "a tensor",
    "operand": "a tensor or a number",
    "tensors": "tensors",
    "axis": "an int axis (negative counts from the end), a tuple of them, or None for all",
    "axes": "a permutation of the axes, or None to reverse them",
    "int": "an int",
    "bool": "True or False",
    "shape": "a list of dim names, ints and at most one -1",
    "str": "a string",
    "index": "ints, slices, None and ... (as in a[:, 1:-1, None])",
    "sections": "a count of equal pieces, or a list of sizes (ints, dims, products and sums of them)",
    "ints": "an int, or a tuple of one int per spatial axis",
    "widths": "an int (every axis, both sides), or a tuple of one (before, after) pair per axis",
    "number": "a number literal",
}


def parameters(name: str) -> list[tuple[str, str]]:
    d = TABLE[name]
    out = []
    for k, p in enumerate(d.params):
        if p.kind == "choice":
            what = " or ".join(f'"{c}"' for c in p.choices)
        elif name == "pow" and p.name == "k":
            what = "a number literal"
        else:
            what = _KINDS.get(p.kind, p.kind)
        if k in d.int_args:
            what += (
                " (int: class labels or indices)" if name != "softmax_cross_entropy" else " (int or float)"
            )
        if k in d.bool_args:
            what += " (a mask: a bool tensor)"
        if not p.required and p.kind not in ("tensor", "operand", "tensors"):
            what += f"; default {_default(p.default)}"
        out.append((p.name, what))
    return out


def notes_sections(opdef: OpDef) -> list[int]:
    """The notes sections an op's rule and derivation cite."""
    text = opdef.rule + " " + opdef.broadcast_rule + " " + opdef.derivation
    found = re.findall(r"(?:notes )?sections? (\d+)", text)
    return sorted({int(s) for s in found})


def lookup(name: str) -> str | None:
    """An op's table name from what a user typed: a name, or an operator symbol like @ or **."""
    if name in TABLE:
        return name
    symbols = {v: k for k, v in OPERATORS.items()} | {
        "**": "pow",
        ".T": "transpose",
        "T": "transpose",
        "~": "logical_not",
    }
    symbols |= {"[]": "index", "[": "index", "a[...]": "index"}
    return symbols.get(name.strip())


WIDTH = 100


def _wrap(text: str, indent: str = "  ", first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent
    )


def listing() -> str:
    rows = [(signature(n), DOCS[n].summary) for n in TABLE]
    width = 40
    pad = " " * (width + 2)
    lines = []
    for sig, summary in rows:
        if len(sig) > width:
            lines.append(sig)
            lines += _wrap(summary, pad)
        else:
            lines += _wrap(summary, pad, first=f"{sig:<{width}}  ")
    lines.append("")
    lines.append("`gradgen ops NAME` prints one op's parameters, shape rule, gradient and derivation.")
    return "\n".join(lines) + "\n"


def describe(name: str) -> str:
    from gradgen.cost import RULES

    d, doc = TABLE[name], DOCS[name]
    out = [signature(name), ""] + _wrap(f"{doc.summary[0].upper()}{doc.summary[1:]}.") + [""]
    out.append("Parameters:")
    params = parameters(name)
    w = max(len(p) for p, _ in params)
    for p, what in params:
        out += _wrap(what, " " * (w + 4), first=f"  {p:<{w}}  ")
    out += ["", "Shape:", *_wrap(doc.shape), "", "Gradient (VJP; g is the cotangent of the output y):"]
    out += _wrap(doc.vjp)
    out += ["", "Rule cited in generated code:", f"  {d.rule}"]
    if d.broadcast_rule:
        out.append(f"  {d.broadcast_rule}  (when an operand was broadcast)")
    sections = notes_sections(d)
    where = (
        f" (notes section{'s' if len(sections) > 1 else ''} {', '.join(map(str, sections))})"
        if sections
        else ""
    )
    out += ["", f"Derivation{where}:"]
    out += ["  " + line for line in d.derivation.splitlines()]
    rule = RULES[name]
    out += ["", "Cost (as `gradgen explain` counts it):"]
    out += _wrap(rule.forward_text, " " * 12, first="  forward:  ")
    out += _wrap(rule.backward_text, " " * 12, first="  backward: ")
    return "\n".join(out) + "\n"
