"""What to write instead: hints for the calls that people bring from NumPy and PyTorch.

Each function returns the whole message for one mistake, pointing at the op or the operator the spec
language has for it (``np.exp(x)`` -> ``exp(x)``, ``x.sum(axis=0)`` -> ``sum(x, axis=0)``,
``max(a, b)`` -> ``maximum(a, b)``).  The messages are built from the parsed call, never evaluated.
"""

from __future__ import annotations

import ast
import difflib

# Names that are not ops, with what the spec language writes instead.  "{0}" and "{1}" are the call's
# first and second arguments as written.
OPERATOR_FOR = {
    "dot": ("{0} @ {1}", "the matrix product is the @ operator"),
    "matmul": ("{0} @ {1}", "the matrix product is the @ operator"),
    "power": ("{0} ** {1}", "a power is the ** operator"),
    "pow": ("{0} ** {1}", "a power is the ** operator"),
    "add": ("{0} + {1}", "use the + operator"),
    "subtract": ("{0} - {1}", "use the - operator"),
    "multiply": ("{0} * {1}", "use the * operator"),
    "divide": ("{0} / {1}", "use the / operator"),
    "true_divide": ("{0} / {1}", "use the / operator"),
    "negative": ("-{0}", "use unary -"),
}
# Reductions that do not exist yet, and the elementwise op of two operands that does.
EXTREMES = {"max": "maximum", "amax": "maximum", "min": "minimum", "amin": "minimum"}


# NumPy's and PyTorch's ways of cutting a tensor into pieces, and how a spec writes each.
_PIECES = "name the pieces with a tuple target: a, b: split(x, 2, axis=-1)"
SPLITS = {
    "split": f"{_PIECES} (2 equal pieces; a list gives the pieces' sizes, as torch.split)",
    "array_split": f"{_PIECES} (the pieces must be equal, or give their sizes as a list)",
    "chunk": f"{_PIECES} (torch's x.chunk(2, dim=-1))",
    "hsplit": f"{_PIECES} (axis=1 for np.hsplit)",
    "vsplit": f"{_PIECES} (axis=0 for np.vsplit)",
    "unbind": "pick each position with an index instead: x[:, 0], x[:, 1], ...",
}


def _args(node: ast.Call) -> list[str]:
    return [ast.unparse(a) for a in node.args]


def _operator(name: str, node: ast.Call) -> str | None:
    """'write x @ W (the matrix product is the @ operator)' for dot(x, W), np.dot and x.dot(W)."""
    if name not in OPERATOR_FOR:
        return None
    form, why = OPERATOR_FOR[name]
    args = _args(node)
    needed = form.count("{1}") + 1
    if len(args) != needed or node.keywords:
        return f"{why}: write {form.format('a', 'b')}"
    return f"{why}: write {form.format(*args)}"


def _extreme(name: str, nargs: int) -> str | None:
    """max/min: the reduction is not an op yet; the elementwise maximum/minimum of two tensors is."""
    if name not in EXTREMES:
        return None
    pair = EXTREMES[name]
    if nargs == 2:
        return f"for the elementwise {pair} of two tensors write {pair}(a, b)"
    return f"a {name.lstrip('a')} reduction is not supported yet ({pair}(a, b) is the elementwise {pair} of two tensors)"


def unknown_op(name: str, node: ast.Call, ops, blocks=()) -> str:
    """The message for a call of a name that is no op and no block of the spec."""
    hint = _operator(name, node) or _extreme(name, len(node.args))
    if hint:
        return f"unknown op {name!r}; {hint}"
    close = difflib.get_close_matches(name, sorted({*ops, *blocks}), n=1)
    lead = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown op {name!r}{lead} known ops: {', '.join(sorted(ops))}; `gradgen ops NAME` describes each"


def attribute_call(node: ast.Call, func: ast.Attribute, is_value, ops) -> str:
    """``np.exp(x)``, ``torch.sum(x)`` (a module prefix) or ``x.sum(axis=0)`` (a method)."""
    name = func.attr
    prefix = ast.unparse(func.value)
    written = ast.unparse(node)
    if name in SPLITS:
        return f"{written} is not an op; {SPLITS[name]}"
    module = isinstance(func.value, ast.Name) and not is_value(func.value.id)
    if module:
        if name in ops:
            bare = ast.unparse(ast.Call(ast.Name(name), node.args, node.keywords))
            return f"ops are called by their bare names: write {bare} instead of {written}"
        hint = _operator(name, node) or _extreme(name, len(node.args))
        if hint:
            return f"{prefix}.{name} is not an op; {hint}"
        close = difflib.get_close_matches(name, sorted(ops), n=1)
        mean = f"; did you mean {close[0]!r}?" if close else ""
        return f"only the ops may be called, not {prefix}.{name}{mean}"
    # a method of a value: the op takes the value as its first argument
    as_call = ast.Call(ast.Name(name), [func.value, *node.args], node.keywords)
    hint = _operator(name, as_call) or _extreme(name, 1)  # x.max(...) reduces
    if hint:
        return f"methods are not allowed; {hint}"
    if name not in ops:
        return f"methods are not allowed, and {name} is not an op ({written})"
    return f"methods are not allowed; write {_method_as_op(name, func.value, node)} instead of {written}"


def _method_as_op(name: str, obj: ast.AST, node: ast.Call) -> str:
    """x.sum(axis=0) -> sum(x, axis=0); x.reshape(N, D) -> reshape(x, [N, D]); x.transpose(1, 0) ->
    transpose(x, axes=[1, 0])."""
    args = list(node.args)
    keywords = list(node.keywords)
    if name == "reshape" and len(args) > 1:
        args = [ast.List(args)]
    if name == "transpose" and args:
        keywords = [ast.keyword("axes", ast.List(args))] + keywords
        args = []
    return ast.unparse(ast.Call(ast.Name(name), [obj, *args], keywords))
