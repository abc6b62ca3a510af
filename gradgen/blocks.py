"""Reusable blocks: named sub-graphs of the spec (``blocks:``), called like ops and inlined per call.

A block is checked once where it is defined (names, ops, numbers; with declared param shapes also
every shape rule, on the block's own dims), then inlined at each call: its params are bound to the
call's arguments, its declared shapes are unified with the arguments' shapes (a block's dims are its
own and take each caller's dims), and its entries become nodes of the graph whose ``origin`` says
which block and call they come from.  The planner names them after the call (``h1_mu`` for entry
``mu`` of the call ``h1: layernorm(...)``) and cites the block's line in the generated comments.

A block calls only the blocks defined above it, so inlining always ends; a block calling itself is an
error.  A block with an error is reported once, at its definition; its calls then stay silent.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
from contextlib import contextmanager
from dataclasses import dataclass

from gradgen import lower as _lower
from gradgen import slicing as _slicing
from gradgen.diagnostics import Place, warning
from gradgen.dims import Dim, parse_dim, shape_str, single_symbol, substitute
from gradgen.ir import Const, Graph, Inlined, TensorType, ancestors, inlined_from
from gradgen.load import BlockDecl, EntryDecl, Text, is_positive_int
from gradgen.ops import ShapeError, callable_ops

# Inlining nested blocks multiplies their sizes; past this many graph nodes the spec is refused.
MAX_NODES = 100_000


@dataclass
class BlockDef:
    decl: BlockDecl
    params: tuple[str, ...]
    declared: dict[str, tuple[tuple[Dim, ...], str]] | None  # param -> (shape, dtype); None: any
    param_places: dict[str, Place]
    dims: tuple[str, ...]  # the block's own dims (declared shapes only)
    entries: tuple[tuple[EntryDecl, ast.Expression], ...]  # the entries that parsed
    output: str
    texts: dict[str, str]  # each entry's expression as one canonical line (comments echo it)
    calls: int = 0


class Blocks:
    """The blocks of one spec, as seen by its lowerer (``lw``)."""

    def __init__(self, lw):
        self.lw = lw
        self.decls: dict[str, BlockDecl] = {}  # every block the spec declares, by name
        self.defs: dict[str, BlockDef] = {}  # the blocks defined so far without errors
        self.failed: set[str] = set()
        self.defining: str | None = None
        self.warnings: list = []
        self.typer = _Typer(lw)

    @property
    def names(self) -> set[str]:
        return set(self.decls)

    def is_block(self, name: str) -> bool:
        return name in self.decls

    # -- definitions -------------------------------------------------------------------------------
    def define(self, decls: tuple[BlockDecl, ...]) -> None:
        for decl in decls:
            self.decls.setdefault(decl.name.value, decl)
        seen: set[str] = set()
        for decl in decls:
            name = decl.name.value
            if name in seen:  # (load refuses duplicate keys; kept for documents built by hand)
                continue
            seen.add(name)
            reason = _name_problem(name, "block name")
            if reason:
                self.lw.err(decl.name.place, reason)
                self.failed.add(name)
                continue
            if name in callable_ops():
                self.warnings.append(
                    warning(
                        decl.name.place,
                        f"block {name!r} has the name of an op; in this spec {name}(...) calls the block",
                    )
                )
            errors_before = len(self.lw.diags)
            bdef = self.check(decl)
            if bdef is None or len(self.lw.diags) > errors_before:
                self.failed.add(name)
            else:
                self.defs[name] = bdef

    def check(self, decl: BlockDecl) -> BlockDef | None:
        """Lower the block's body once on placeholder params: every error that does not depend on a
        call is reported here, at the block's lines, and only here."""
        lw = self.lw
        name = decl.name.value
        params, declared, places, dims = self.signature(decl)
        if params is None:
            return None
        env = {d: Dim.sym(d) for d in dims} if declared is not None else {}
        mark = len(lw.nodes), dict(lw.cse), len(lw.math_uses)
        self.defining = name
        entries = []
        try:
            with self.context(scope={}, later={e.name.value: e.name.place for e in decl.graph}, dim_env=env):
                for p in params:
                    nid = lw.add("input", (), (), p, places[p], p)
                    lw.scope[p] = nid
                    if declared is not None:
                        self.typer.fixed[nid] = TensorType(*declared[p])
                taken = dict(places)
                for entry in decl.graph:
                    tree = (
                        self.pieces(entry, taken)
                        if _slicing.is_tuple_target(entry.name)
                        else self.entry(entry, taken)
                    )
                    if tree is not None:
                        entries.append((entry, tree))
                output = self.output(decl, taken) if len(entries) == len(decl.graph) else None
                if declared is not None and output is not None:
                    self.typecheck(mark[0])
                self.unused(decl, output)
        finally:
            self.defining = None
            del lw.nodes[mark[0] :]
            lw.cse = mark[1]
            del lw.math_uses[mark[2] :]  # (only a call makes the module compute with math)
            self.typer.forget(mark[0])
        if output is None:
            return None
        texts = {e.name.value: _lower.echo_source(e.expr.value) for e, _ in entries}
        return BlockDef(decl, params, declared, places, dims, tuple(entries), output, texts)

    def signature(self, decl: BlockDecl):
        """The params, their declared shapes and dtypes (or None), their places, the block's dims."""
        lw = self.lw
        what = f"of block {decl.name.value!r}"
        names: list[str] = []
        places: dict[str, Place] = {}
        ok = True
        for p in decl.params:
            reason = _name_problem(p.name.value, f"block {decl.name.value!r}: param")
            if reason or p.name.value in places:
                lw.err(p.name.place, reason or f"param {p.name.value!r} {what} is declared twice")
                ok = False
                continue
            names.append(p.name.value)
            places[p.name.value] = p.name.place
        if not ok:
            return None, None, None, None
        if decl.params[0].shape is None:
            return tuple(names), None, places, ()
        declared: dict[str, tuple[tuple[Dim, ...], str]] = {}
        alone: list[str] = []
        inside: dict[str, Text] = {}
        for p in decl.params:
            shape = []
            for t in p.shape:
                if is_positive_int(t.value) and not t.quoted:
                    shape.append(Dim.const(int(t.value)))
                    continue
                d = parse_dim(t.value)
                sym = single_symbol(d)
                if sym is not None and sym not in alone:
                    alone.append(sym)
                for s in d.symbols:
                    inside.setdefault(s, t)
                shape.append(d)
            declared[p.name.value] = (tuple(shape), p.dtype.value if p.dtype is not None else "float")
        for sym, t in inside.items():
            if sym not in alone:
                lw.err(
                    t.place,
                    f"dim {sym!r} {what} appears only inside products ({t.value}); every dim of a block "
                    f"must be a whole axis of some declared param, so that each call can bind it: give "
                    f"{sym} an axis of its own in some param's shape",
                )
                ok = False
        if not ok:
            return None, None, None, None
        return tuple(names), declared, places, tuple(alone)

    def entry(self, entry: EntryDecl, taken: dict[str, Place]) -> ast.Expression | None:
        lw = self.lw
        name = entry.name.value
        block = self.defining
        reason = _name_problem(name, f"block {block!r}: entry")
        if reason is None and name in taken:
            reason = f"{name!r} is already defined in block {block!r} (line {taken[name].line})"
        if reason:
            lw.err(entry.name.place, reason)
            lw.later.pop(name, None)
            return None
        taken[name] = entry.name.place
        lw.entry = name
        before = len(lw.nodes)
        value = lw.expression(entry, "block entry")
        lw.entry = None
        lw.later.pop(name, None)
        if value is None:
            lw.failed.add(name)
            return None
        if value >= before:
            lw.nodes[value] = dataclasses.replace(lw.nodes[value], label=name)  # messages say "xc, line 6"
        lw.scope[name] = value
        return ast.parse(entry.expr.value, mode="eval")

    def pieces(self, entry: EntryDecl, taken: dict[str, Place]) -> ast.Expression | None:
        """``q, k, v: split(qkv, 3, axis=-1)`` in a block: each name an entry of the block."""
        lw = self.lw
        block = self.defining
        names = _slicing.targets(entry.name)
        for t in names:
            lw.later.pop(entry.name.value, None)
            reason = _name_problem(t.value, f"block {block!r}: entry")
            if reason is None and t.value in taken:
                reason = f"{t.value!r} is already defined in block {block!r} (line {taken[t.value].line})"
            if reason:
                lw.err(t.place, reason)
                lw.failed.update(t.value for t in names)  # known names: no second error at their uses
                return None
            taken[t.value] = t.place
        lw.expr_text = entry.expr
        tree = ast.parse(entry.expr.value, mode="eval")
        try:
            nids = _slicing.split_call(lw, tree.body, names, lw.source_of(tree.body), own_entries=False)
        except _lower._Poisoned:
            nids = None
        except _lower._Unsupported as exc:
            lw.err(lw.unsupported_place(exc), exc.message)
            nids = None
        if nids is None:
            lw.failed.update(t.value for t in names)
            return None
        for t, nid in zip(names, nids):
            lw.nodes[nid] = dataclasses.replace(lw.nodes[nid], label=t.value)
            lw.scope[t.value] = nid
        return tree

    def output(self, decl: BlockDecl, taken: dict[str, Place]) -> str | None:
        if decl.output is None:
            return _slicing.targets(decl.graph[-1].name)[-1].value
        out = decl.output.value
        if out not in taken:
            self.lw.err(
                decl.output.place,
                f"output {out!r} of block {decl.name.value!r} is not a param or an entry of it",
            )
            return None
        return out

    def unused(self, decl: BlockDecl, output: str | None) -> None:
        lw = self.lw
        if output is None or output not in lw.scope:
            return
        live = ancestors(lw.nodes, lw.scope[output])
        for e in decl.graph:
            nid = lw.scope.get(e.name.value)
            if isinstance(nid, int) and nid not in live:
                self.warnings.append(
                    warning(
                        e.name.place,
                        f"entry {e.name.value!r} of block {decl.name.value!r} is not used by its output "
                        f"{output!r} and is not computed",
                    )
                )

    def typecheck(self, start: int) -> None:
        """Every shape rule of a block with declared param shapes, on the block's own dims."""
        for nid in range(start, len(self.lw.nodes)):
            message = self.typer.error(nid)
            if message is not None:
                self.lw.err(self.lw.nodes[nid].place, message)

    # -- calls ---------------------------------------------------------------------------------------
    def call(self, node: ast.Call, label: str, place: Place) -> int | Const:
        lw = self.lw
        name = node.func.id
        if name == self.defining:
            raise _lower._Unsupported(
                node, f"block {name!r} calls itself; blocks are inlined, so they cannot recurse"
            )
        if name in self.failed:
            raise _lower._Poisoned()
        if name not in self.defs:  # declared below the block being defined
            line = self.decls[name].name.place.line
            raise _lower._Unsupported(
                node,
                f"block {name!r} is defined below block {self.defining!r} (line {line}); a block may call "
                "only the blocks defined above it",
            )
        bdef = self.defs[name]
        bound = self.bind(bdef, node)
        values = {p: lw.expr(arg) for p, arg in bound.items()}
        env = self.unify(bdef, bound, values) if bdef.declared is not None else {}
        if self.defining is None:  # (a call inside a block's definition check is no call yet)
            bdef.calls += 1
        value = self.inline(bdef, values, env, label, place)
        if len(lw.nodes) > MAX_NODES:
            raise _lower._Unsupported(
                node, f"inlining the calls of block {name!r} makes a graph of more than {MAX_NODES} nodes"
            )
        return value

    def bind(self, bdef: BlockDef, node: ast.Call) -> dict[str, ast.AST]:
        """The call's arguments by param name (positional in param order, or by keyword)."""
        name = bdef.decl.name.value
        params = bdef.params
        if len(node.args) > len(params):
            raise _lower._Unsupported(
                node.args[len(params)], f"block {name} takes {len(params)} arguments: {', '.join(params)}"
            )
        bound = dict(zip(params, node.args))
        for kw in node.keywords:
            if kw.arg is None:
                raise _lower._Unsupported(kw, f"**kwargs are not allowed in a call of {name}")
            if kw.arg not in params:
                raise _lower._Unsupported(
                    kw.value,
                    f"unknown keyword argument {kw.arg!r} for block {name}; expected: {', '.join(params)}",
                )
            if kw.arg in bound:
                raise _lower._Unsupported(kw.value, f"block {name} got {kw.arg!r} twice")
            bound[kw.arg] = kw.value
        missing = [p for p in params if p not in bound]
        if missing:
            raise _lower._Unsupported(node, f"block {name} is missing its argument {missing[0]!r}")
        return {p: bound[p] for p in params}

    def unify(self, bdef: BlockDef, args: dict[str, ast.AST], values: dict) -> dict[str, Dim]:
        """Bind the block's dims to this call's dims, then check every declared param shape."""
        types = {p: self.arg_type(v) for p, v in values.items()}
        env: dict[str, Dim] = {}
        source: dict[str, str] = {}
        for p, (shape, dtype) in bdef.declared.items():
            t = types[p]
            if t is None:  # a param of the block being checked, of any shape: nothing to bind
                continue
            if t.dtype != dtype:
                self.mismatch(
                    bdef, p, args[p], t, f"it is {_a(t.dtype)} tensor, the param's dtype is {dtype}"
                )
            if t.rank != len(shape):
                self.mismatch(bdef, p, args[p], t, f"rank {t.rank}, declared rank {len(shape)}")
            for d, actual in zip(shape, t.shape):
                sym = single_symbol(d)
                if sym is not None and sym not in env:
                    env[sym] = actual
                    source[sym] = f"from argument {p} ({self.lw.source_of(args[p])})"
        for sym in bdef.dims:
            env.setdefault(sym, Dim.sym(sym))  # (only while checking a block: its params' own dims)
        for p, (shape, _dtype) in bdef.declared.items():
            t = types[p]
            for ax, (d, actual) in enumerate(zip(shape, t.shape if t is not None else shape)):
                want = substitute(d, env)
                if t is None or want == actual:
                    continue
                self.mismatch(bdef, p, args[p], t, _axis_detail(ax, actual, d, want, env, source))
        return env

    def mismatch(self, bdef: BlockDef, p: str, arg: ast.AST, t: TensorType, detail: str):
        """Refuse an argument that does not fit its param's declared shape: name both places."""
        shape, dtype = bdef.declared[p]
        block = bdef.decl.name.value
        declared = shape_str(shape) + ("" if dtype == "float" else f" {dtype}")
        raise _lower._Unsupported(
            arg,
            f"argument {p} of block {block!r} ({self.lw.source_of(arg)}, shape {t}) does not fit "
            f"{p}: {declared} declared at line {bdef.param_places[p].line}: {detail}",
        )

    def arg_type(self, value) -> TensorType | None:
        """The argument's type; None for a value of unknown shape in a block being checked."""
        if isinstance(value, Const):
            return TensorType((), "float")
        t = self.typer.type_of(value)
        if t is None and self.defining is not None and not self.typer.causes(value):
            return None
        if t is None:
            # the argument's own shape error is the first cause: report it, and nothing about the call
            for nid, message in self.typer.causes(value):
                if nid not in self.typer.reported:
                    self.typer.reported.add(nid)
                    self.lw.err(self.lw.nodes[nid].place, message)
            raise _lower._Poisoned()
        return t

    def inline(self, bdef: BlockDef, values: dict, env: dict[str, Dim], label: str, place: Place):
        lw = self.lw
        caller = lw.origin[-1].entry if lw.origin else lw.entry
        prefix = lw.hint_prefix or lw.entry
        outer = lw.origin
        block = bdef.decl.name.value
        later = {e.name.value: e.name.place for e, _ in bdef.entries}
        start = len(lw.nodes)
        named: set[int] = set()  # nodes that an entry of this call already names
        call_text = _lower.echo_source(label)
        with self.context(scope=dict(values), later=later, dim_env=env):
            for entry, tree in bdef.entries:
                if _slicing.is_tuple_target(entry.name):
                    self.inline_pieces(bdef, entry, tree, (caller, call_text, place, outer, prefix))
                    continue
                name = entry.name.value
                is_output = name == bdef.output
                frame = Inlined(
                    block,
                    caller,
                    call_text,
                    place,
                    name,
                    bdef.texts[name],
                    entry.name.place,
                    is_output,
                )
                lw.origin = outer + (frame,)
                lw.hint_prefix = prefix if is_output else f"{prefix}_{name}"
                lw.expr_text = entry.expr
                try:
                    value = lw.expr(tree.body)
                except _lower._Unsupported as exc:
                    raise self.located(exc) from None
                if (
                    isinstance(value, int)
                    and value >= start
                    and value not in named
                    and lw.nodes[value].name is None
                ):
                    # the call's value is named after the block (h1_up_layernorm) until the entry that
                    # makes the call names it; an inner entry's value after that entry (h1_up_mu)
                    hint = f"{prefix}_{block}" if is_output else lw.hint_prefix
                    lw.nodes[value] = dataclasses.replace(lw.nodes[value], hint=hint, label=name)
                    named.add(value)
                lw.scope[name] = value
            return lw.scope[bdef.output]

    def inline_pieces(self, bdef: BlockDef, entry: EntryDecl, tree, call) -> None:
        """The pieces of a split in a block's body, at one call: one named value per target."""
        lw = self.lw
        caller, call_text, place, outer, prefix = call
        names = _slicing.targets(entry.name)
        text = bdef.texts[entry.name.value]
        frame = Inlined(
            bdef.decl.name.value, caller, call_text, place, names[0].value, text, entry.name.place
        )
        lw.origin = outer + (frame,)
        lw.hint_prefix = f"{prefix}_{names[0].value}"
        lw.expr_text = entry.expr
        try:
            nids = _slicing.split_call(lw, tree.body, names, lw.source_of(tree.body), own_entries=False)
        except _lower._Unsupported as exc:
            raise self.located(exc) from None
        for k, (t, nid) in enumerate(zip(names, nids)):
            is_output = t.value == bdef.output
            hint = f"{prefix}_{bdef.decl.name.value}" if is_output else f"{prefix}_{t.value}"
            own = dataclasses.replace(frame, entry=t.value, source=f"{text}[{k}]", is_output=is_output)
            lw.nodes[nid] = dataclasses.replace(
                lw.nodes[nid], hint=hint, label=t.value, origin=outer + (own,)
            )
            lw.scope[t.value] = nid

    def located(self, exc):
        """An error inside an inlined body, placed in the block and saying which call it comes from."""
        if getattr(exc, "located", False):
            return exc
        out = _lower._Unsupported(self.lw.unsupported_place(exc), exc.message + inlined_from(self.lw.origin))
        out.located = True
        return out

    @contextmanager
    def context(self, scope, later, dim_env):
        """Lower a block's body with its own names and dims; the lowerer's state is restored after."""
        lw = self.lw
        saved = (lw.scope, lw.later, lw.failed, lw.dim_env, lw.origin, lw.hint_prefix, lw.entry, lw.expr_text)
        lw.scope, lw.later, lw.failed, lw.dim_env = scope, later, set(), dim_env
        try:
            yield
        finally:
            lw.scope, lw.later, lw.failed, lw.dim_env, lw.origin, lw.hint_prefix, lw.entry, lw.expr_text = (
                saved
            )

    def final_warnings(self) -> list:
        """Warnings about the blocks, once every call is inlined: the definitions' and unused blocks."""
        unused = [
            warning(bdef.decl.name.place, f"block {name!r} is never called")
            for name, bdef in self.defs.items()
            if bdef.calls == 0
        ]
        return self.warnings + unused


class _Typer:
    """Shape inference on the lowerer's nodes as they are made, for unifying a call's arguments."""

    def __init__(self, lw):
        self.lw = lw
        self.types: list[TensorType | None] = []
        self.errors: dict[int, str] = {}
        self.fixed: dict[int, TensorType] = {}  # input nodes (spec inputs and placeholder params)
        self.reported: set[int] = set()

    def forget(self, start: int) -> None:
        del self.types[start:]
        for nid in [k for k in self.errors if k >= start]:
            del self.errors[nid]
        for nid in [k for k in self.fixed if k >= start]:
            del self.fixed[nid]
        self.reported = {k for k in self.reported if k < start}

    def type_of(self, nid: int) -> TensorType | None:
        from gradgen.shapes import node_type

        nodes = self.lw.nodes
        graph = _Partial(nodes)
        while len(self.types) <= nid:
            node = nodes[len(self.types)]
            if node.op == "input":
                self.types.append(self.fixed.get(node.id))
                continue
            try:
                self.types.append(node_type(graph, node, self.types))
            except ShapeError as exc:
                self.errors[node.id] = str(exc) + inlined_from(node.origin)
                self.types.append(None)
        return self.types[nid]

    def error(self, nid: int) -> str | None:
        self.type_of(nid)
        return self.errors.get(nid)

    def causes(self, nid: int) -> list[tuple[int, str]]:
        """The nodes whose own shape rule failed, among nid and what it reads."""
        return [(k, self.errors[k]) for k in sorted(ancestors(self.lw.nodes, nid)) if k in self.errors]


class _Partial:
    """The nodes lowered so far, seen as a graph by the shape rules (which ask only where a node is)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def where(self, i: int) -> str:
        return Graph.where(self, i)


def _name_problem(name: str, what: str) -> str | None:
    if not name.isidentifier() or not name.isascii():
        return f"{what} {name!r} is not a valid Python identifier"
    if keyword.iskeyword(name):
        return f"{what} {name!r} is a Python keyword"
    if name.startswith("_"):
        return f"{what} {name!r} must not start with an underscore (reserved for generated code)"
    return None


def _axis_detail(ax: int, actual: Dim, d: Dim, want: Dim, env, source) -> str:
    """'axis 0 is H, but E is D from argument x (h)': what the call binds the declared dim to."""
    if d.is_const:
        text = f"axis {ax} is {actual}, but the param declares {d}"
    elif single_symbol(d) is not None:
        text = f"axis {ax} is {actual}, but {d} is {want} {source.get(str(d), '')}".rstrip()
    else:
        why = "; ".join(f"{s} is {env[s]} {source[s]}" for s in d.symbols if s in source)
        text = f"axis {ax} is {actual}, but {d} is {want} here ({why})"
    if want.is_const != actual.is_const:
        text += "; a literal dim is never assumed equal to a symbolic one"
    return text


def _a(dtype: str) -> str:
    return {"int": "an int", "bool": "a bool"}.get(dtype, "a float")
