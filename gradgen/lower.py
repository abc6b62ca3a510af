"""Stage 2, lower: a SpecDoc to the graph IR.

Expressions are parsed with ``ast.parse(mode="eval")`` and walked; only the subset in SPEC.md is
accepted, and nothing is ever evaluated.  Names are resolved against inputs and earlier entries, and
identical subexpressions share one node (common subexpression elimination), so the generated code
computes each value once.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import math
import sys
import tokenize

from gradgen.diagnostics import Diagnostic, Place, SpecError, error, warning
from gradgen.dims import Dim
from gradgen.ir import Const, Entry, Graph, InputInfo, Node
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
from gradgen.ops import CALLABLE, TABLE

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
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
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
    if name in CALLABLE:
        return f"{what} {name!r} is the name of an op"
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
        self.entry: str | None = None
        self.expr_text: Text | None = None

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
        self.nodes.append(Node(nid, op, args, attrs, name, label, place, self.entry))
        if op != "input":
            self.cse[key] = nid
        return nid

    def name_node(self, nid: int, name: str, place: Place) -> None:
        """Give a graph entry's name to its node (the first name wins when CSE merged two entries)."""
        n = self.nodes[nid]
        if n.name is None:  # keeps the expression's place: shape errors point into the expression
            self.nodes[nid] = Node(n.id, n.op, n.args, n.attrs, name, name, n.place, n.entry)

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
        return one_line(ast.get_source_segment(self.expr_text.value, node) or ast.unparse(node))

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
            return Const(node.value, label)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                operand = self.expr(node.operand)
                if isinstance(operand, Const):
                    return Const(-operand.value, label)
                return self.add("neg", (operand,), (), label, place)
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            raise _Unsupported(node, f"unsupported operator in {label}; allowed: + - * / @ ** and unary -")
        if isinstance(node, ast.BinOp):
            op = BINOPS.get(type(node.op))
            if op is None:
                raise _Unsupported(
                    node, f"unsupported operator in {label}; allowed: + - * / @ ** and unary -"
                )
            place = self.operator_place(node)
            left = self.expr(node.left)
            if op == "pow":
                right = self.literal_number(node.right, "the exponent of **")
                if isinstance(left, Const):
                    raise _Unsupported(node, f"{label} has no tensor operand; write the number itself")
                return self.add("pow", (left,), (("k", right.value),), label, place)
            right = self.expr(node.right)
            if isinstance(left, Const) and isinstance(right, Const):
                raise _Unsupported(node, f"{label} has no tensor operand; write the number itself")
            if op == "matmul" and (isinstance(left, Const) or isinstance(right, Const)):
                raise _Unsupported(node, f"matmul needs two tensors, not a number, in {label}")
            return self.add(op, (left, right), (), label, place)
        if isinstance(node, ast.Attribute):
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
        what = SYNTAX_NAMES.get(type(node), type(node).__name__)
        raise _Unsupported(
            node,
            (
                f"{what} are not allowed in expressions"
                if what.endswith("s")
                else f"{what} is not allowed in expressions"
            ),
        )

    def name(self, node: ast.Name, place: Place) -> int:
        name = node.id
        if name in self.scope:
            return self.scope[name]
        if name in CALLABLE:
            raise _Unsupported(node, f"op {name!r} must be called, as {name}(...)")
        if name in self.later:
            line = self.later[name].line
            if name == self.entry:
                raise _Unsupported(node, f"{name!r} is used in its own definition")
            raise _Unsupported(node, f"{name!r} is used before it is defined (line {line})")
        raise _Unsupported(
            node,
            f"unknown name {name!r}; not an input or an earlier graph entry"
            + _did_you_mean(name, self.scope),
        )

    def literal_number(self, node: ast.AST, what: str) -> Const:
        value = node
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            value = node.operand
        if (
            isinstance(value, ast.Constant)
            and isinstance(value.value, (int, float))
            and not isinstance(value.value, bool)
        ):
            _check_finite(node, value.value, self.source_of(node))
            return Const(sign * value.value, self.source_of(node))
        raise _Unsupported(
            node, f"{what} must be a number literal, not a tensor expression ({self.source_of(node)})"
        )

    def call(self, node: ast.Call, label: str, place: Place) -> int:
        if not isinstance(node.func, ast.Name):
            func = node.func
            if type(func) in SYNTAX_NAMES:
                self.expr(func)  # raises: "lambdas are not allowed ..."
            if (
                isinstance(func, ast.Attribute)
                and func.attr in CALLABLE
                and not node.keywords
                and not node.args
            ):
                obj = self.source_of(func.value)
                raise _Unsupported(
                    node, f"methods are not allowed; write {func.attr}({obj}) instead of {label}"
                )
            raise _Unsupported(node, f"only the ops may be called, not {self.source_of(func)}")
        opname = node.func.id
        if opname not in CALLABLE:
            if opname in self.scope:
                raise _Unsupported(node, f"{opname!r} is a tensor, not an op, and cannot be called")
            hint = _did_you_mean(opname, CALLABLE)
            raise _Unsupported(
                node, f"unknown op {opname!r}{hint or ';'} known ops: {', '.join(sorted(CALLABLE))}"
            )
        opdef = TABLE[opname]
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
                    raise _Unsupported(node, f"{opname} needs at least one tensor operand")
            elif param.kind == "tensor":
                value = self.expr(arg)
                if isinstance(value, Const):
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
                if isinstance(e, ast.Name):
                    if not valid_dim_name(e.id):
                        raise _Unsupported(e, f"{e.id!r} is not a valid dim name")
                    if e.id not in self.dims:
                        raise _Unsupported(
                            e, f"unknown dim {e.id!r} in shape; dims come from the inputs' shapes"
                        )
                    dims.append(e.id)
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
                    self.dims.setdefault(t.value, (decl.name.value, t.place))
                    shape.append(Dim.sym(t.value))
            if not ok and decl.name.value in self.scope:
                continue  # a second definition: the first one stands
            nid = self.add("input", (), (), decl.name.value, decl.name.place, decl.name.value)
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

        entries: list[Entry] = []
        for decl in doc.graph:
            name = decl.name.value
            ok = claim(decl.name, "graph entry")
            self.entry = name
            self.expr_text = decl.expr
            tree, problem = _parse(decl.expr)
            if problem is not None:
                self.err(*problem)
                self.later.pop(name, None)
                continue
            if _is_number(tree.body):
                self.err(decl.expr.place, f"graph entry {name!r} is a number, not a tensor expression")
                self.later.pop(name, None)
                continue
            try:
                value = self.expr(tree.body)
            except _Unsupported as exc:
                if isinstance(exc.node, Place):
                    place = exc.node
                elif exc.node is not None and hasattr(exc.node, "col_offset"):
                    place = self.place_of(exc.node)
                else:
                    place = decl.expr.place
                self.err(place, exc.message)
                self.later.pop(name, None)
                continue
            finally:
                self.entry = None
            self.later.pop(name, None)
            if isinstance(value, Const):
                self.err(decl.expr.place, f"graph entry {name!r} is a number, not a tensor expression")
                continue
            if not ok and name in self.scope:
                continue  # a second definition: the first one stands
            self.name_node(value, name, decl.name.place)
            self.scope[name] = value
            entries.append(Entry(name, value, one_line(decl.expr.value), decl.name.place))

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

        if self.diags:
            raise SpecError(self.diags)

        # Graph entries that the output does not use are not computed; say so.
        used = _ancestors(self.nodes, output)
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
        )


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


def one_line(source: str) -> str:
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


def _ancestors(nodes: list[Node], root: int) -> set[int]:
    seen = set()
    stack = [root]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(nodes[i].refs)
    return seen


def lower(doc: SpecDoc) -> tuple[Graph, list[Diagnostic]]:
    """Resolve a SpecDoc to a Graph; returns the graph and its warnings, raises SpecError on errors."""
    lowerer = _Lowerer(doc)
    graph = lowerer.lower()
    return graph, lowerer.diags
