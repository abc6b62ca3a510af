"""Stage 2, lower: a SpecDoc to the graph IR.

Expressions are parsed with ``ast.parse(mode="eval")`` and walked; only the subset in SPEC.md is
accepted, and nothing is ever evaluated.  Names are resolved against inputs and earlier entries, and
identical subexpressions share one node (common subexpression elimination), so the generated code
computes each value once.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import io
import keyword
import math
import re
import sys
import tokenize

from gradgen import blocks, hints, numbers, ops_masks, slicing
from gradgen.diagnostics import Diagnostic, Place, SpecError, error, warning
from gradgen.dims import Dim, parse_dim, single_symbol
from gradgen.ir import Const, Entry, Graph, InputInfo, Node, TensorType, ancestors
from gradgen.load import (
    IDENTIFIER,
    MAX_DIM,
    MAX_RANK,
    SpecDoc,
    Text,
    abbreviate,
    is_positive_int,
    valid_dim_name,
)
from gradgen.numbers import CONSTANTS, FoldError
from gradgen.ops import TABLE, callable_ops

BINOPS = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.MatMult: "matmul",
    ast.Pow: "pow",
}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**"}
# Names that the generated module itself defines or uses inside the functions that take the inputs as
# arguments: an input or graph entry with one of these names would shadow it.
RESERVED = {
    "np": "the NumPy import",
    "dout": "the argument of backward",
    "cache": "the argument of backward",
    "dtype": "the dtype that the generated code computes in",
    "Gradients": "the NamedTuple of gradients",
    "forward": "a generated function",
    "backward": "a generated function",
    "value_and_grad": "a generated function",
    "ValueError": "the exception that the generated shape checks raise",
    "slice": "a builtin that the generated code calls",
    "AttributeError": "the exception that the generated input checks catch",
}
# What `derivatives:` may list; vjp (forward, backward, value_and_grad) is always generated.
DERIVATIVE_KINDS = ("vjp", "jvp", "jacobian", "hvp", "hessian")
# Names that the functions of a derivative kind define or take, beyond RESERVED.
DERIVATIVE_NAMES = {
    "jvp": (("jvp", "a generated function"), ("tangents", "the argument of jvp")),
    "hvp": (("hvp", "a generated function"), ("v", "the argument of hvp")),
    "jacobian": (("jacobian", "a generated function"), ("Jacobian", "the NamedTuple of Jacobian blocks")),
    "hessian": (
        ("hessian", "a generated function"),
        ("Hessian", "the NamedTuple of Hessian blocks"),
        ("Jacobian", "the NamedTuple of Hessian rows"),
    ),
    "any": (("objective", "a generated function"), ("Wrt", "the NamedTuple of per-input arrays")),
}
# Module names that would shadow a module that the generated files import.
SHADOWED_MODULES = ("numpy", "pytest")
STATEMENTS = {
    ast.Assign: "an assignment",
    ast.AugAssign: "an assignment",
    ast.AnnAssign: "an assignment",
    ast.Import: "an import",
    ast.ImportFrom: "an import",
    ast.Delete: "a del statement",
}
SYNTAX_NAMES = {
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.IfExp: "conditional expressions",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.JoinedStr: "f-strings",
    ast.Starred: "starred arguments",
    ast.NamedExpr: "assignment expressions",
    ast.Await: "await",
    ast.Slice: "slices",
    ast.Tuple: "tuples",
    ast.List: "lists",
}


# How deeply one expression may nest operations (``a + b + c`` nests two).  Lowering and the emitted
# expression trees walk an expression recursively, a few Python frames per level; Python's own parser
# stops at 200 nested brackets.  A long sum belongs in several graph entries, each its own variable.
MAX_EXPR_DEPTH = 200


class _Unsupported(Exception):
    def __init__(self, node: ast.AST | Place | None, message: str):
        self.node = node
        self.message = message


class _Poisoned(Exception):
    """An expression reads a name whose own definition failed: that error is the cause, say no more."""


def check_name(text: Text, what: str, module: bool = False) -> str | None:
    """The reason a spec name is invalid, or None (``module``: the name of the generated module)."""
    name = text.value
    if not IDENTIFIER.match(name) or not name.isascii():
        return f"{what} {name!r} is not a valid Python identifier"
    if keyword.iskeyword(name) or (keyword.issoftkeyword(name) and name != "_"):
        return f"{what} {name!r} is a Python keyword"
    if name.startswith("_"):
        return f"{what} {name!r} must not start with an underscore (reserved for generated code)"
    if module:
        if name in SHADOWED_MODULES:
            return f"{what} {name!r} would shadow the module {name!r} that the generated files import"
        return None
    if name in RESERVED:
        return f"{what} {name!r} is reserved in generated modules ({RESERVED[name]})"
    return None


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Lowerer:
    def __init__(self, doc: SpecDoc):
        self.doc = doc
        self.path = doc.path
        self.diags: list[Diagnostic] = []
        self.nodes: list[Node] = []
        self.cse: dict[tuple, int] = {}
        self.scope: dict[str, int] = {}
        self.defined_at: dict[str, Place] = {}
        self.later: dict[str, Place] = {e.name.value: e.name.place for e in doc.graph}
        self.dims: dict[str, tuple[str, Place]] = {}  # dim -> (the input that first names it, where)
        self.product_dims: dict[str, tuple[str, Text]] = {}  # dim -> (input, dim text) inside a product
        self.entry: str | None = None
        self.expr_text: Text | None = None
        self.failed: set[str] = set()  # entries whose expression failed: known, but not lowered
        self.dim_env: dict[str, Dim] | None = None  # a block's local dims (None: the spec's dims)
        self.origin: tuple = ()  # the block calls being inlined, outermost first
        self.hint_prefix: str | None = None  # variable-name prefix of the inlined entry being lowered
        self.math_uses: list[Place] = []  # numbers that the generated code computes with math.*
        self.blocks = blocks.Blocks(self)

    def err(self, place: Place, message: str) -> None:
        self.diags.append(error(place, message))

    # -- nodes ---------------------------------------------------------------------------------------
    def add(
        self, op: str, args: tuple, attrs: tuple, label: str, place: Place, name: str | None = None
    ) -> int:
        key = (op, args, attrs)
        if op != "input" and key in self.cse:
            return self.cse[key]
        nid = len(self.nodes)
        hint = f"{self.hint_prefix}_{op}" if self.hint_prefix else None
        self.nodes.append(
            Node(nid, op, args, attrs, name, label, place, self.entry, origin=self.origin, hint=hint)
        )
        if op != "input":
            self.cse[key] = nid
        return nid

    def name_node(self, nid: int, name: str, place: Place) -> None:
        """Give a graph entry's name to its node (the first name wins when CSE merged two entries)."""
        n = self.nodes[nid]
        if n.name is None:  # keeps the expression's place: shape errors point into the expression
            self.nodes[nid] = dataclasses.replace(n, name=name, label=name)

    # -- expressions ---------------------------------------------------------------------------------
    def place_of(self, node: ast.AST) -> Place:
        assert self.expr_text is not None
        return self.expr_text.place_at(getattr(node, "lineno", 1) - 1, getattr(node, "col_offset", 0))

    def operator_place(self, node: ast.BinOp) -> Place:
        """The place of a binary operator's symbol (``@`` in ``x @ W``), else of the whole expression."""
        left, right = node.left, node.right
        if left.end_lineno == right.lineno:
            line = self.expr_text.value.splitlines()[right.lineno - 1]
            k = line.find(SYMBOLS[type(node.op)], left.end_col_offset, right.col_offset)
            if k >= 0:
                return self.expr_text.place_at(right.lineno - 1, k)
        return self.place_of(node)

    def source_of(self, node: ast.AST) -> str:
        return source_line(ast.get_source_segment(self.expr_text.value, node) or ast.unparse(node))

    def expr(self, node: ast.AST) -> int | Const:
        place = self.place_of(node)
        label = self.source_of(node)
        if isinstance(node, ast.Name):
            return self.name(node, place)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise _Unsupported(
                    node, f"unsupported literal {label}; only int and float numbers may appear here"
                )
            _check_finite(node, node.value, label)
            return Const(node.value, literal_text(node.value, label))
        if _is_mask_syntax(node):
            return self.mask(node, label, place)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                operand = self.expr(node.operand)
                if isinstance(operand, Const):
                    return self.negated(operand, node, label)
                return self.add("neg", (operand,), (), label, place)
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            raise _Unsupported(
                node,
                f"unsupported operator in {label}; allowed: + - * / @ ** and unary -, and on masks comparisons, & | ~",
            )
        if isinstance(node, ast.BinOp):
            op = BINOPS.get(type(node.op))
            if op is None:
                raise _Unsupported(
                    node,
                    f"unsupported operator in {label}; allowed: + - * / @ ** and unary -, and on masks comparisons, & | ~",
                )
            place = self.operator_place(node)
            left = self.expr(node.left)
            if op == "pow" and not isinstance(left, Const):
                right = self.expr(node.right)
                if not isinstance(right, Const):  # a tensor exponent (issue 9)
                    return self.add("power", (left, right), (), label, place)
                right = self.exponent(node.right, right)
                return self.add("pow", (left,), (("k", right.value),), label, place)
            right = self.expr(node.right)
            if op == "matmul" and (isinstance(left, Const) or isinstance(right, Const)):
                raise _Unsupported(node, f"matmul needs two tensors, not a number, in {label}")
            if isinstance(left, Const) and isinstance(right, Const):
                return self.fold(SYMBOLS[type(node.op)], left, right, node, label)
            if op == "div" and isinstance(right, Const) and right.num is None and right.value == 0:
                raise _Unsupported(node, f"{label} divides by zero")
            if op == "pow":  # a number to a tensor power: the number is the base
                return self.add("power", (self.power_base(node.left, left), right), (), label, place)
            return self.add(op, (left, right), (), label, place)
        if isinstance(node, ast.Attribute):
            if node.attr in ("inf", "nan"):
                raise _Unsupported(node, _NOT_A_NUMBER)
            if node.attr != "T":
                raise _Unsupported(
                    node, f"unsupported attribute .{node.attr}; only .T (transpose) is allowed"
                )
            operand = self.expr(node.value)
            if isinstance(operand, Const):
                raise _Unsupported(node, f".T of a number in {label}")
            return self.add("transpose", (operand,), (("axes", None),), label, place)
        if isinstance(node, ast.Call):
            return self.call(node, label, place)
        if isinstance(node, ast.Subscript):
            return slicing.subscript(self, node, label, place)
        what = SYNTAX_NAMES.get(type(node), type(node).__name__)
        raise _Unsupported(
            node,
            (
                f"{what} are not allowed in expressions"
                if what.endswith("s")
                else f"{what} is not allowed in expressions"
            ),
        )

    def mask(self, node: ast.AST, label: str, place: Place) -> int:
        """A comparison, or masks combined with & | ~ (ops_masks); and, or, not and chained
        comparisons are refused with the spelling that works elementwise."""
        if isinstance(node, ast.BoolOp):
            symbol = "&" if isinstance(node.op, ast.And) else "|"
            word = "and" if symbol == "&" else "or"
            raise _Unsupported(
                node, f"'{word}' is not elementwise; combine masks with {symbol}: (a > 0) {symbol} (b > 0)"
            )
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                raise _Unsupported(node, "'not' is not elementwise; negate a mask with ~: ~(a > 0)")
            return self.add("logical_not", (self.expr(node.operand),), (), label, place)
        if isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                raise _Unsupported(
                    node,
                    f"chained comparisons ({label}) are not supported; & and | bind tighter than comparisons, "
                    "so put each comparison in brackets: (a < b) & (b < c)",
                )
            args = (self.expr(node.left), self.expr(node.comparators[0]))
            opname = ops_masks.COMPARISONS[type(node.ops[0]).__name__]
        else:
            args = (self.expr(node.left), self.expr(node.right))
            opname = "logical_and" if isinstance(node.op, ast.BitAnd) else "logical_or"
        if all(isinstance(a, Const) for a in args):
            raise _Unsupported(
                node, f"{ops_masks.SYMBOL[opname]} needs a tensor operand; both sides are numbers ({label})"
            )
        return self.add(opname, args, (), label, place)

    def name(self, node: ast.Name, place: Place) -> int | Const:
        """A value (input, earlier entry, block param), else a dim or a constant used as a number."""
        name = node.id
        if name in self.scope:
            return self.scope[name]
        if name in self.failed:
            raise _Poisoned()
        number = self.number_name(name)
        if number is not None:
            return number
        if name in callable_ops() or name in self.blocks.names:
            what = "op" if name in callable_ops() else "block"
            raise _Unsupported(node, f"{what} {name!r} must be called, as {name}(...)")
        if name in self.later:
            line = self.later[name].line
            if name == self.entry:
                raise _Unsupported(node, f"{name!r} is used in its own definition")
            raise _Unsupported(node, f"{name!r} is used before it is defined (line {line})")
        if name in ("inf", "nan"):
            raise _Unsupported(node, _NOT_A_NUMBER)
        if self.origin or self.dim_env is not None:
            raise _Unsupported(
                node,
                f"unknown name {name!r}; a block sees its params, its earlier entries, the dims of its "
                "declared param shapes, pi and e" + _did_you_mean(name, self.known_numbers()),
            )
        raise _Unsupported(
            node,
            f"unknown name {name!r}; not an input or an earlier graph entry"
            + _did_you_mean(name, self.known_numbers()),
        )

    def is_value(self, name: str) -> bool:
        return name in self.scope or name in self.failed

    # -- numbers: folded at build time, or dims known at run time -----------------------------------
    def known_numbers(self) -> list[str]:
        dims = self.dims if self.dim_env is None else self.dim_env
        return [*self.scope, *dims, *CONSTANTS]

    def dim_of(self, name: str) -> Dim | None:
        """The dim a name stands for here (a block's local dims are its callers' dims)."""
        if self.dim_env is not None:
            return self.dim_env.get(name)
        return Dim.sym(name) if name in self.dims or name in self.product_dims else None

    def number_name(self, name: str) -> Const | None:
        """A dim used as a number (known at run time), or pi or e; values shadow both."""
        d = self.dim_of(name)
        if d is not None:
            return self.run_const(numbers.of_dim(d), name)
        if name in CONSTANTS:
            return Const(CONSTANTS[name], numbers.literal_text(CONSTANTS[name]))
        return None

    def run_const(self, n: numbers.RunNum, label: str) -> Const:
        d = n.dim if n.op == "dim" else None
        if d is not None and d.is_const:
            return Const(d.value, str(d.value))
        if n.functions:
            self.math_uses.append(self.expr_text.place if self.expr_text else self.doc.top_place)
        return Const(None, label, n)

    def fold(self, symbol: str, a: Const, b: Const, node: ast.AST, label: str) -> Const:
        """``a op b`` for two numbers: computed now, or kept as a run-time number when a dim is read."""
        try:
            if a.num is None and b.num is None:
                value = numbers.fold_binary(symbol, a.value, b.value, label)
                return Const(value, numbers.literal_text(value))
            na = a.num or numbers.of_value(a.value)
            nb = b.num or numbers.of_value(b.value)
            return self.run_const(numbers.run_binary(symbol, na, nb, label), label)
        except FoldError as exc:
            raise _Unsupported(node, str(exc)) from None

    def negated(self, a: Const, node: ast.UnaryOp, label: str) -> Const:
        if a.num is not None:
            return self.run_const(numbers.run_neg(a.num), label)
        if isinstance(node.operand, ast.Constant):
            return Const(-a.value, "-" + a.text)  # a signed literal keeps its spelling
        return Const(-a.value, numbers.literal_text(-a.value))

    def fold_call(self, opname: str, a: Const, node: ast.AST, label: str) -> Const:
        """An elementwise op of a number: its value now, or its run-time form for a dim."""
        if a.num is None:
            try:
                value = numbers.fold_call(opname, a.value, label)
            except FoldError as exc:
                raise _Unsupported(node, str(exc)) from None
            return Const(value, numbers.literal_text(value))
        run = numbers.run_call(opname, a.num)
        if run is None:
            allowed = ", ".join(sorted({*numbers.RUN_FUNCS, "square"}))
            raise _Unsupported(
                node,
                f"{opname} of a number known only at run time ({label}) is not supported; "
                f"these ops apply to dims used as numbers: {allowed}",
            )
        return self.run_const(run, label)

    def exponent(self, node: ast.AST, value: Const) -> Const:
        """The number exponent of ``a ** k``: known when the spec is built."""
        text = self.source_of(node)
        if value.num is not None:
            raise _Unsupported(
                node,
                f"the exponent of ** must be a number known when the spec is built; {text} reads a dim, "
                "which is known only at run time",
            )
        return value

    def power_base(self, node: ast.AST, value: Const) -> Const:
        """The number base of ``c ** b`` with a tensor b: positive and known at build time, since b's
        gradient is y log(c) and log(c) is folded then."""
        text = self.source_of(node)
        if value.num is not None:
            raise _Unsupported(
                node,
                f"the base of ** with a tensor exponent must be a number known when the spec is built; "
                f"{text} reads a dim, which is known only at run time",
            )
        if not value.value > 0:
            raise _Unsupported(
                node,
                f"the base of ** with a tensor exponent must be positive, not {text} (its log is the "
                "exponent's gradient)",
            )
        return value

    def call(self, node: ast.Call, label: str, place: Place) -> int | Const:
        """A name in call position is an op (or a block of the spec), whatever values share its name."""
        if not isinstance(node.func, ast.Name):
            func = node.func
            if type(func) in SYNTAX_NAMES:
                self.expr(func)  # raises: "lambdas are not allowed ..."
            if isinstance(func, ast.Attribute):
                raise _Unsupported(node, hints.attribute_call(node, func, self.is_value, callable_ops()))
            raise _Unsupported(node, f"only the ops may be called, not {self.source_of(func)}")
        opname = node.func.id
        if self.blocks.is_block(opname):  # a spec's own block wins over an op of the same name
            return self.blocks.call(node, label, place)
        if opname == "split":
            raise _Unsupported(node, slicing.SPLIT_ALONE)
        if opname not in callable_ops():
            if opname in self.scope:
                raise _Unsupported(node, f"{opname!r} is a tensor, not an op, and cannot be called")
            raise _Unsupported(node, hints.unknown_op(opname, node, callable_ops(), self.blocks.names))
        opdef = TABLE[opname]
        if pair := hints.pair_of_tensors(opname, node):  # max(a, b): maximum(a, b) was meant
            raise _Unsupported(node, pair)
        params = opdef.params
        values: dict[str, ast.AST] = {}
        positional = list(node.args)
        if opdef.varargs:
            # einsum: subscripts then any number of tensors
            head = params[0]
            if not positional:
                raise _Unsupported(node, f"{opname} needs {head.name} first")
            values[head.name] = positional.pop(0)
            if not positional:
                raise _Unsupported(node, f"{opname} needs at least one tensor operand")
            values["operands"] = positional
            positional = []
            params = params[1:]
        for param, arg in zip(params, positional):
            values[param.name] = arg
        if len(positional) > len(params):
            many = "argument" if len(params) == 1 else "arguments"
            raise _Unsupported(
                node.args[len(params)], f"{opname} takes at most {len(params)} positional {many}"
            )
        for kw in node.keywords:
            if kw.arg is None:
                raise _Unsupported(kw, f"**kwargs are not allowed in a call of {opname}")
            names = [p.name for p in opdef.params]
            if kw.arg not in names:
                raise _Unsupported(
                    kw.value,
                    f"unknown keyword argument {kw.arg!r} for {opname}; expected: {', '.join(names)}",
                )
            if kw.arg in values:
                raise _Unsupported(kw.value, f"{opname} got {kw.arg!r} twice")
            values[kw.arg] = kw.value
        args: list = []
        attrs: list = []
        for param in opdef.params:
            if param.name not in values:
                if param.required:
                    raise _Unsupported(node, f"{opname} is missing its argument {param.name!r}")
                if param.kind not in ("tensor", "operand"):
                    attrs.append((param.name, param.default))
                continue
            arg = values[param.name]
            if param.kind == "operand":  # a tensor or a number (maximum, minimum)
                args.append(self.expr(arg))
                if len(args) == 2 and all(isinstance(a, Const) for a in args):
                    if any(a.num is not None for a in args):
                        raise _Unsupported(node, f"{opname} needs at least one tensor operand")
                    pick = max if opname == "maximum" else min
                    value = pick(args[0].value, args[1].value)
                    return Const(value, numbers.literal_text(value))
            elif param.kind == "tensor":
                value = self.expr(arg)
                if isinstance(value, Const):
                    if opname in numbers.FOLD_FUNCS:  # exp(2), sqrt(K): a number, not a node
                        return self.fold_call(opname, value, node, label)
                    raise _Unsupported(
                        arg, f"argument {param.name!r} of {opname} must be a tensor, not a number"
                    )
                args.append(value)
            elif param.kind == "tensors":
                items = arg if isinstance(arg, list) else self.tensor_list(arg, opname)
                for item in items:
                    value = self.expr(item)
                    if isinstance(value, Const):
                        raise _Unsupported(item, f"operands of {opname} must be tensors, not numbers")
                    args.append(value)
            else:
                attrs.append((param.name, self.attr_value(param, arg, opname)))
        return self.add(opname, tuple(args), tuple(attrs), label, place)

    def tensor_list(self, arg: ast.AST, opname: str) -> list[ast.AST]:
        if isinstance(arg, (ast.Tuple, ast.List)) and arg.elts:
            return list(arg.elts)
        raise _Unsupported(arg, f"{opname} takes a tuple of tensors like (a, b)")

    def attr_value(self, param, arg: ast.AST, opname: str):
        kind = param.kind
        text = self.source_of(arg)
        if kind in ("axis", "axes"):
            if isinstance(arg, ast.Constant) and arg.value is None:
                if kind == "axis" and not param.allow_none:
                    raise _Unsupported(arg, f"{param.name} of {opname} must be an int")
                return None
            if kind == "axis" and not isinstance(arg, (ast.Tuple, ast.List)):
                return self.int_literal(arg, f"{param.name} of {opname}")
            if kind == "axis" and not param.allow_tuple:
                raise _Unsupported(arg, f"{param.name} of {opname} must be a single int, not {text}")
            if isinstance(arg, (ast.Tuple, ast.List)):
                return tuple(self.int_literal(e, f"{param.name} of {opname}") for e in arg.elts)
            raise _Unsupported(arg, f"{param.name} of {opname} must be a list of ints, not {text}")
        if kind == "int":
            return self.int_literal(arg, f"{param.name} of {opname}")
        if kind in ("ints", "widths", "number"):
            return self.conv_attr(kind, arg, f"{param.name} of {opname}")
        if kind == "bool":
            if isinstance(arg, ast.Constant) and isinstance(arg.value, bool):
                return arg.value
            raise _Unsupported(arg, f"{param.name} of {opname} must be True or False, not {text}")
        if kind == "choice":
            if isinstance(arg, ast.Constant) and arg.value in param.choices:
                return arg.value
            choices = " or ".join(repr(c) for c in param.choices)
            quote = (
                " (a string: put it in quotes)"
                if isinstance(arg, ast.Name) and arg.id in param.choices
                else ""
            )
            raise _Unsupported(arg, f"{param.name} of {opname} must be {choices}, not {text}{quote}")
        if kind == "str":
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
            raise _Unsupported(arg, f"{param.name} of {opname} must be a string literal, not {text}")
        if kind == "shape":
            if not isinstance(arg, (ast.List, ast.Tuple)):
                raise _Unsupported(arg, f"shape of {opname} must be a list of dims like [N, -1], not {text}")
            dims = []
            for e in arg.elts:
                if isinstance(e, (ast.Name, ast.BinOp)):
                    dims.append(self.shape_dim(e, opname))
                else:
                    value = self.int_literal(e, f"a dim of the shape of {opname}")
                    if value == 0 or value < -1:
                        raise _Unsupported(
                            e,
                            f"dim {value} in the shape of {opname} must be a positive int, a dim name or -1",
                        )
                    dims.append(value)
            if dims.count(-1) > 1:
                raise _Unsupported(arg, f"the shape of {opname} may hold at most one -1")
            if len(dims) > MAX_RANK:
                raise _Unsupported(
                    arg, f"the shape of {opname} has {len(dims)} dims; NumPy arrays have at most {MAX_RANK}"
                )
            return tuple(dims)
        raise AssertionError(kind)  # pragma: no cover

    def derivative_kinds(self) -> tuple[tuple[str, Place], ...]:
        """The kinds of ``derivatives:`` beyond vjp (always generated), each with where it is written."""
        out, seen = [], {}
        for t in self.doc.derivatives or ():
            kind = t.value
            if kind not in DERIVATIVE_KINDS:
                self.err(
                    t.place,
                    f"unknown derivative kind {kind!r}; expected any of {', '.join(DERIVATIVE_KINDS)}"
                    + _did_you_mean(kind, DERIVATIVE_KINDS),
                )
            elif kind in seen:
                self.err(
                    t.place, f"derivative kind {kind!r} is listed twice (first at line {seen[kind].line})"
                )
            else:
                seen[kind] = t.place
                if kind != "vjp":
                    out.append((kind, t.place))
                    self.check_names_free(kind, t.place)
        return tuple(out)

    def check_names_free(self, kind: str, place: Place) -> None:
        """The names that a derivative kind's functions use must not be spec names (they would be
        shadowed inside the generated functions, or clash with their arguments)."""
        names = DERIVATIVE_NAMES[kind] + DERIVATIVE_NAMES["any"]
        for name, what in names:
            if name in self.defined_at or name in self.scope:
                where = self.defined_at.get(name) or self.nodes[self.scope[name]].place
                self.err(
                    place,
                    f"derivative kind {kind!r} needs the name {name!r} ({what}), "
                    f"which the spec defines at line {where.line}; rename it",
                )

    def shape_dim(self, e: ast.AST, opname: str) -> Dim:
        """A dim of a shape argument: a dim name, or a product of names and ints (``B*T``, ``H*Dh``)."""
        if isinstance(e, ast.BinOp):
            if not isinstance(e.op, ast.Mult):
                raise _Unsupported(
                    e,
                    f"a dim of the shape of {opname} is a name, an int or a product like B*T, not {self.source_of(e)}",
                )
            return self.shape_dim(e.left, opname) * self.shape_dim(e.right, opname)
        if isinstance(e, ast.Name):
            if not valid_dim_name(e.id):
                raise _Unsupported(e, f"{e.id!r} is not a valid dim name")
            d = self.dim_of(e.id)
            if d is None:
                where = (
                    "the dims of a block come from its declared param shapes"
                    if self.dim_env is not None
                    else "dims come from the inputs' shapes"
                )
                raise _Unsupported(e, f"unknown dim {e.id!r} in shape; {where}")
            return d
        value = self.int_literal(e, f"a dim of the shape of {opname}")
        if value <= 0:
            raise _Unsupported(
                e, f"a factor of a dim in the shape of {opname} must be a positive int, not {value}"
            )
        return Dim.const(value)

    def conv_attr(self, kind: str, arg: ast.AST, what: str):
        """The literal attributes of pad, the convolutions and the pools: ``ints`` an int or a tuple
        of ints (a stride per spatial axis), ``widths`` an int or a tuple of (before, after) pairs
        (one per axis), ``number`` a number known when the spec is built (a fill value)."""
        if kind == "number":
            value = self.expr(arg)
            if isinstance(value, Const) and value.num is None:
                return value.value
            raise _Unsupported(arg, f"{what} must be a number literal, not {self.source_of(arg)}")
        if not isinstance(arg, (ast.Tuple, ast.List)):
            return self.int_literal(arg, what)
        if kind == "ints":
            return tuple(self.int_literal(e, what) for e in arg.elts)
        pairs = []
        for e in arg.elts:
            if not (isinstance(e, (ast.Tuple, ast.List)) and len(e.elts) == 2):
                raise _Unsupported(e, f"{what} must hold (before, after) pairs, not {self.source_of(e)}")
            pairs.append(tuple(self.int_literal(v, what) for v in e.elts))
        return tuple(pairs)

    def int_literal(self, node: ast.AST, what: str) -> int:
        sign = 1
        value = node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, value = -1, node.operand
        if isinstance(value, ast.Constant) and type(value.value) is int:
            if value.value > MAX_DIM:
                raise _Unsupported(
                    node, f"{what} is out of range: {abbreviate(str(value.value))} is more than 2**63 - 1"
                )
            return sign * value.value
        raise _Unsupported(node, f"{what} must be an int literal, not {self.source_of(node)}")

    # -- entries and dims ----------------------------------------------------------------------------
    def expression(self, decl, what: str) -> int | None:
        """Parse and lower one entry's expression to its node; on failure report why and return None
        (None without a report when it reads a name whose own definition failed)."""
        name = decl.name.value
        self.expr_text = decl.expr
        tree, problem = _parse(decl.expr)
        if problem is not None:
            self.err(*problem)
            return None
        if _is_number(tree.body):
            self.err(decl.expr.place, f"{what} {name!r} is a number, not a tensor expression")
            return None
        try:
            value = self.expr(tree.body)
        except _Poisoned:
            return None
        except _Unsupported as exc:
            self.err(self.unsupported_place(exc), exc.message)
            return None
        if isinstance(value, Const):
            self.err(decl.expr.place, f"{what} {name!r} is a number, not a tensor expression")
            return None
        return value

    def unsupported_place(self, exc: _Unsupported) -> Place:
        if isinstance(exc.node, Place):
            return exc.node
        if exc.node is not None and hasattr(exc.node, "col_offset"):
            return self.place_of(exc.node)
        return self.expr_text.place

    def input_dim(self, input_name: str, t: Text) -> Dim:
        """A symbolic dim of an input's shape; a plain name binds that dim, a product only reads its
        factors, which some input axis must bind on its own."""
        d = parse_dim(t.value)
        symbol = single_symbol(d)
        if symbol is not None:
            self.dims.setdefault(symbol, (input_name, t.place))
        else:
            for sym in d.symbols:
                self.product_dims.setdefault(sym, (input_name, t))
        return d

    def check_dims_bound(self) -> None:
        """Every dim must be the whole size of some input axis: the generated module reads it there."""
        for sym, (input_name, t) in self.product_dims.items():
            if sym not in self.dims:
                self.err(
                    t.place,
                    f"dim {sym!r} appears only inside products ({t.value} in the shape of input "
                    f"{input_name!r}); the generated module reads every dim from an input axis of exactly "
                    f"that size, so give {sym} an axis of its own in some input's shape (an input of shape "
                    f"[{sym}], for example)",
                )

    # -- the document --------------------------------------------------------------------------------
    def lower(self) -> Graph:
        doc = self.doc
        names_seen: dict[str, Place] = {}

        def claim(text: Text, what: str) -> bool:
            reason = check_name(text, what)
            if reason:
                self.err(text.place, reason)
                return False
            if text.value in names_seen:
                first = names_seen[text.value]
                kind = "an input" if text.value in self.defined_at else "a graph entry"
                self.err(
                    text.place, f"{what} {text.value!r} is already defined as {kind} (line {first.line})"
                )
                return False
            names_seen[text.value] = text.place
            return True

        module_name = doc.stem
        if doc.name is not None:
            reason = check_name(doc.name, "name", module=True)
            if reason:
                self.err(doc.name.place, reason)
            module_name = doc.name.value
        elif check_name(Text(doc.stem, doc.top_place), "", module=True):
            self.err(
                doc.top_place,
                f"the file name {doc.stem!r} is not a valid module name; set 'name:' in the spec",
            )

        inputs: list[InputInfo] = []
        for decl in doc.inputs:
            ok = claim(decl.name, "input")
            shape = []
            for t in decl.shape:
                if is_positive_int(t.value) and not t.quoted:
                    shape.append(Dim.const(int(t.value)))
                else:
                    shape.append(self.input_dim(decl.name.value, t))
            if not ok and decl.name.value in self.scope:
                continue  # a second definition: the first one stands
            nid = self.add("input", (), (), decl.name.value, decl.name.place, decl.name.value)
            self.blocks.typer.fixed[nid] = TensorType(tuple(shape), decl.dtype.value)
            self.scope[decl.name.value] = nid
            inputs.append(
                InputInfo(
                    nid,
                    decl.name.value,
                    tuple(shape),
                    decl.dtype.value,
                    decl.name.place,
                    tuple(t.place for t in decl.shape),
                )
            )
            self.defined_at[decl.name.value] = decl.name.place
        self.check_dims_bound()
        self.blocks.define(doc.blocks)

        entries: list[Entry] = []
        for decl in doc.graph:
            if slicing.is_tuple_target(decl.name):  # a, b: split(x, 2)
                entries.extend(slicing.tuple_entry(self, decl, claim))
                continue
            name = decl.name.value
            ok = claim(decl.name, "graph entry")
            self.entry = name
            try:
                value = self.expression(decl, "graph entry")
            finally:
                self.entry = None
            self.later.pop(name, None)
            if value is None:
                self.failed.add(name)  # later entries may name it without a second error
                continue
            if not ok and name in self.scope:
                continue  # a second definition: the first one stands
            self.name_node(value, name, decl.name.place)
            self.scope[name] = value
            entries.append(
                Entry(
                    name, value, source_line(decl.expr.value), decl.name.place, echo_source(decl.expr.value)
                )
            )

        output = None
        if doc.output is not None:
            out = doc.output.value
            if out in self.scope:
                output = self.scope[out]
            elif not self.diags:
                self.err(doc.output.place, f"output {out!r} is not an input or a graph entry")
        elif entries:
            output = entries[-1].node

        wrt: list[int] = []
        by_name = {i.name: i for i in inputs}
        if doc.wrt is not None:
            seen = set()
            for t in doc.wrt:
                info = by_name.get(t.value)
                if info is None:
                    if t.value in self.scope or any(e.name.value == t.value for e in doc.graph):
                        self.err(
                            t.place,
                            f"wrt names {t.value!r}, a graph entry; gradients are taken w.r.t. inputs only",
                        )
                    elif not self.diags or t.value not in names_seen:
                        self.err(t.place, f"wrt names {t.value!r}, which is not an input")
                    continue
                if info.dtype == "bool":
                    self.err(t.place, f"wrt names {t.value!r}, a bool input; masks are never differentiated")
                    continue
                if info.dtype != "float":
                    self.err(
                        t.place, f"wrt names {t.value!r}, an int input; int inputs are never differentiated"
                    )
                    continue
                if t.value in seen:
                    self.err(t.place, f"wrt names {t.value!r} twice")
                    continue
                seen.add(t.value)
                wrt.append(info.node)
        else:
            wrt = [i.node for i in inputs if i.dtype == "float"]
            if inputs and not wrt and not self.diags:
                self.err(doc.top_place, "no float input to differentiate; every input is an int")

        if self.math_uses and "math" in names_seen:
            self.err(
                names_seen["math"],
                "the name 'math' is taken in this spec: the generated module imports math to compute "
                f"a number from dims (line {self.math_uses[0].line}); rename this value",
            )
        derivatives = self.derivative_kinds()

        if self.diags:
            raise SpecError(self.diags)
        self.diags.extend(self.blocks.final_warnings())

        # Graph entries that the output does not use are not computed; say so.
        used = ancestors(self.nodes, output)
        for e in entries:
            if e.node not in used:
                self.diags.append(
                    warning(
                        e.place,
                        f"graph entry {e.name!r} is not used by the output {self.nodes[output].label!r} and is not computed",
                    )
                )
        description = doc.description.value if doc.description is not None else ""
        dim_origin = tuple((d, name, place) for d, (name, place) in self.dims.items())
        return Graph(
            self.path,
            module_name,
            description,
            tuple(self.nodes),
            tuple(inputs),
            tuple(entries),
            output,
            tuple(wrt),
            dim_origin,
            derivatives,
        )


# A number exactly as Python spells one (1, 2.5, .5, 1e-5, 1_000, 0x1F): one token, safe to print as code.
NUMBER_TOKEN = re.compile(r"[0-9.][0-9A-Za-z_.]*(?:[eE][+-][0-9_]+)?\Z")


def literal_text(value, source: str) -> str:
    """How a literal is printed in generated code and comments: its own spelling when that is a plain
    number token (``1e-5`` stays ``1e-5``), else Python's rendering of the parsed value (``'sum'``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and NUMBER_TOKEN.match(source):
        return source
    if value is Ellipsis:  # x[..., 0]
        return "..."
    return repr(value)


def echo(node: ast.expr, source: str) -> str:
    """A graph entry's expression as one line, rendered from its parse tree, not copied from the spec.

    Line breaks, continuations, Python comments and redundant parentheses of the source are gone; number
    literals keep their spelling and strings are quoted as ``repr`` quotes them.  The result is still
    spec-derived text: it is printed only in comments, through ``gradgen.escape.one_line``.
    """
    for parent in ast.walk(node):  # iterative: literals become names spelled like the literal
        for field, value in ast.iter_fields(parent):
            if isinstance(value, ast.Constant):
                setattr(parent, field, _spelled(value, source))
            elif isinstance(value, list):
                value[:] = [_spelled(v, source) if isinstance(v, ast.Constant) else v for v in value]
    try:
        return ast.unparse(node)
    except RecursionError:  # too deep for ast.unparse: the source, collapsed to one line
        return " ".join(source.split())


def echo_source(source: str) -> str:
    """``echo`` of an expression's text (parsed afresh: ``echo`` rewrites the tree it is given)."""
    return echo(ast.parse(source, mode="eval").body, source)


def _spelled(node: ast.Constant, source: str) -> ast.Name:
    segment = ast.get_source_segment(source, node) or ""
    return ast.Name(id=literal_text(node.value, segment), ctx=ast.Load())


def _parse(text: Text) -> tuple[ast.Expression | None, tuple[Place, str] | None]:
    """The expression's syntax tree, or the place and message of why it is not one we accept."""
    source = text.value
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        place = text.place_at(0, (exc.offset or 1) - 1)
        if "integer string conversion" in (exc.msg or ""):  # Python 3.11+: 4,300 unless configured
            limit = sys.get_int_max_str_digits()
            return None, (place, f"an int literal has more than {limit} digits")
        return None, (place, _statement(source) or f"invalid expression: {exc.msg}")
    except (RecursionError, MemoryError):  # deeper than the parser's own C stack allows
        return None, (text.place, _too_deep(None))
    except ValueError as exc:  # a NUL character, before Python 3.11.4 (a SyntaxError since)
        return None, (text.place, f"invalid expression: {exc}")
    depth = _depth(tree.body)
    if depth > MAX_EXPR_DEPTH:
        return None, (text.place, _too_deep(depth))
    return tree, None


def _too_deep(depth: int | None) -> str:
    nests = "" if depth is None else f" (this one nests {depth})"
    return (
        f"the expression nests operations more than {MAX_EXPR_DEPTH} deep{nests}; "
        "split it into several graph entries"
    )


def _depth(root: ast.AST) -> int:
    """How many expression nodes the longest path from the root passes through (iterative)."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        for child in ast.iter_child_nodes(node):
            stack.append((child, d + 1 if isinstance(child, ast.expr) else d))
    return deepest


def _check_finite(node: ast.AST, value: int | float, label: str) -> None:
    """Number literals become Python floats in the generated code: they must be finite there."""
    try:
        float(value)
    except OverflowError:
        raise _Unsupported(
            node,
            f"the literal {abbreviate(str(abs(value)))} is too large for a float "
            "(the largest is about 1.8e308)",
        ) from None
    if not math.isfinite(value):
        raise _Unsupported(node, f"the literal {label} is not a finite number")


_CLOSERS = frozenset(")]},")
_OPENERS = frozenset("([{")


def source_line(source: str) -> str:
    """An expression's source text on one line, for messages and comments: comments dropped, and each
    line break (inside brackets or after a backslash) one space, or none next to a bracket.  Line breaks
    inside a (triple-quoted) string literal are shown as ``\\n``."""
    if "\n" not in source and "\r" not in source and "#" not in source:
        return source
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return " ".join(source.split())
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    out: list[str] = []
    prev = None
    for tok in tokens:
        if tok.type in skip or tok.type == tokenize.ENDMARKER:
            continue
        text = tok.string
        if tok.type == tokenize.STRING:
            text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
        if prev is not None:
            if tok.start[0] == prev.end[0]:
                out.append(" " * (tok.start[1] - prev.end[1]))
            elif prev.string not in _OPENERS and text not in _CLOSERS:
                out.append(" ")
        out.append(text)
        prev = tok
    return "".join(out)


_NOT_A_NUMBER = (
    "inf and nan are not numbers a spec may use; for a masked fill write a large finite number, as in "
    "where(mask, scores, -1e9): the softmax that follows gives it an exact 0 weight, while a row that is "
    "all -inf would give nan"
)


def _is_mask_syntax(node: ast.AST) -> bool:
    """Comparisons, & | ~ and the Python spellings that people try instead (and, or, not)."""
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        return True
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, (ast.BitAnd, ast.BitOr))
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not))


def _is_number(node: ast.AST) -> bool:
    """Whether an expression is arithmetic on number literals only (``2 * 3``)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_number(node.left) and _is_number(node.right)
    return False


def _statement(source: str) -> str | None:
    """The message for text that parses as Python statements rather than one expression, else None."""
    try:
        body = ast.parse(source, mode="exec").body
    except SyntaxError:
        return None
    if len(body) > 1:
        return "a graph entry is one expression, not several statements"
    if body and not isinstance(body[0], ast.Expr):
        what = STATEMENTS.get(type(body[0]), "a statement")
        return f"a graph entry is one expression, not {what}"
    return None


def lower(doc: SpecDoc) -> tuple[Graph, list[Diagnostic]]:
    """Resolve a SpecDoc to a Graph; returns the graph and its warnings, raises SpecError on errors."""
    lowerer = _Lowerer(doc)
    graph = lowerer.lower()
    return graph, lowerer.diags
