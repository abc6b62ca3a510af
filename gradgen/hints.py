"""What to write instead: hints for the calls that people bring from NumPy and PyTorch.

Each function returns the whole message for one mistake, pointing at the op or the operator the spec
language has for it (``np.exp(x)`` -> ``exp(x)``, ``x.sum(axis=0)`` -> ``sum(x, axis=0)``,
``max(a, b)`` -> ``maximum(a, b)``, ``np.amax(x)`` -> ``max(x)``).  The messages are built from the parsed call, never evaluated.
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
    "greater": ("{0} > {1}", "a comparison is an operator"),
    "greater_equal": ("{0} >= {1}", "a comparison is an operator"),
    "less": ("{0} < {1}", "a comparison is an operator"),
    "less_equal": ("{0} <= {1}", "a comparison is an operator"),
    "equal": ("{0} == {1}", "a comparison is an operator"),
    "not_equal": ("{0} != {1}", "a comparison is an operator"),
    "logical_and": ("({0}) & ({1})", "masks combine with the & operator"),
    "logical_or": ("({0}) | ({1})", "masks combine with the | operator"),
    "logical_not": ("~({0})", "a mask is negated with the ~ operator"),
}
# The reductions max and min, and the elementwise op of two operands that a call max(a, b) means.
EXTREMES = {"max": "maximum", "min": "minimum"}
# NumPy's and torch's other names for those reductions.
REDUCTION_ALIASES = {"amax": "max", "amin": "min"}


# Ops that other libraries name differently (torch.clamp is np.clip).
RENAMED = {"clamp": "clip", "clamp_min": "maximum", "clamp_max": "minimum"}


def _renamed(name: str, node: ast.Call) -> str | None:
    """'the op is called clip: write clip(x, 0, 1)' for clamp(x, 0, 1) and torch.clamp(x, 0, 1)."""
    if name not in RENAMED:
        return None
    op = RENAMED[name]
    return f"the op is called {op}: write {_spelled(op, node.args, node.keywords)}"


# Keyword arguments that other libraries name differently, per op.
KEYWORDS = {"clip": {"min": "lo", "max": "hi", "a_min": "lo", "a_max": "hi"}}


def _spelled(op: str, args: list[ast.AST], keywords: list[ast.keyword]) -> str:
    """The call of op as the spec language writes it, with its own keyword names."""
    names = KEYWORDS.get(op, {})
    keywords = [ast.keyword(names.get(k.arg, k.arg), k.value) for k in keywords]
    return ast.unparse(ast.Call(ast.Name(op), list(args), keywords))


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


def _axis_like(arg: ast.AST) -> bool:
    """What an axis argument looks like: an int literal (maybe negated), None, or a tuple of ints."""
    if isinstance(arg, (ast.Tuple, ast.List)):
        return all(_axis_like(e) for e in arg.elts)
    if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.USub):
        arg = arg.operand
    return isinstance(arg, ast.Constant) and (arg.value is None or type(arg.value) is int)


def pair_of_tensors(name: str, node: ast.Call) -> str | None:
    """max(a, b) whose second argument is no axis: the elementwise maximum of two tensors was meant."""
    if name not in EXTREMES or len(node.args) != 2 or _axis_like(node.args[1]):
        return None
    pair = EXTREMES[name]
    return (
        f"{name}(a, axis) is a reduction over axes, and {ast.unparse(node.args[1])} is no axis; for the "
        f"elementwise {pair} of two tensors write {pair}({', '.join(_args(node))})"
    )


def _alias(name: str, node: ast.Call) -> str | None:
    """np.amax(x, axis=0) -> max(x, axis=0)."""
    if name not in REDUCTION_ALIASES:
        return None
    own = ast.unparse(ast.Call(ast.Name(REDUCTION_ALIASES[name]), node.args, node.keywords))
    return f"the {REDUCTION_ALIASES[name]} reduction is called {REDUCTION_ALIASES[name]}: write {own}"


def unknown_op(name: str, node: ast.Call, ops, blocks=()) -> str:
    """The message for a call of a name that is no op and no block of the spec."""
    hint = _operator(name, node) or _alias(name, node) or _renamed(name, node)
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
            pair = pair_of_tensors(name, node)
            if pair:
                return f"{prefix}.{name} is not an op; {pair}"
            bare = _spelled(name, node.args, node.keywords)
            return f"ops are called by their bare names: write {bare} instead of {written}"
        hint = _operator(name, node) or _alias(name, node) or _renamed(name, node)
        if hint:
            return f"{prefix}.{name} is not an op; {hint}"
        close = difflib.get_close_matches(name, sorted(ops), n=1)
        mean = f"; did you mean {close[0]!r}?" if close else ""
        return f"only the ops may be called, not {prefix}.{name}{mean}"
    # a method of a value: the op takes the value as its first argument
    as_call = ast.Call(ast.Name(name), [func.value, *node.args], node.keywords)
    hint = (
        _operator(name, as_call)
        or _alias(name, as_call)
        or pair_of_tensors(name, as_call)
        or _renamed(name, as_call)
    )
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
