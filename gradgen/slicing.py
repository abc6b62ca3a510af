"""Lowering of static indexing: ``x[:, 0]``, ``x[..., :K]``, ``x[:, a:b:s]``, ``x[None]``, and of
``split`` with a tuple target (``i, f, g, o: split(z, 4, axis=-1)``), each piece one ``split`` node.

Bounds are ints, dims and ``+ - *`` of those, known when the spec is built up to the dims' sizes; the
op rows in ``gradgen/ops_index.py`` prove them in range on the operand's shape.
"""

from __future__ import annotations

import ast

from gradgen import lower as _lower
from gradgen.dims import Dim
from gradgen.ir import Const, Entry
from gradgen.load import MAX_DIM, Text
from gradgen.ops_index import ELLIPSIS, NEW

_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def subscript(lw, node: ast.Subscript, label: str, place) -> int:
    """``a[index]``: one ``index`` node."""
    operand = lw.expr(node.value)
    if isinstance(operand, Const):
        raise _lower._Unsupported(node, f"indexing a number ({label}); only tensors may be indexed")
    elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    items = tuple(_item(lw, e) for e in elts)
    if items.count(ELLIPSIS) > 1:
        raise _lower._Unsupported(node.slice, f"an index may hold at most one ... ({label})")
    return lw.add("index", (operand,), (("index", items),), label, place)


def _item(lw, e: ast.AST) -> tuple:
    if isinstance(e, ast.Slice):
        step = None
        if e.step is not None:
            d = bound(lw, e.step, "step")
            if not d.is_const or d.value < 1:
                raise _lower._Unsupported(
                    e.step,
                    f"the step of a slice must be a positive int ({lw.source_of(e.step)}); negative "
                    "steps are not supported",
                )
            step = d.value
        lo = None if e.lower is None else bound(lw, e.lower, "start")
        hi = None if e.upper is None else bound(lw, e.upper, "stop")
        return ("slice", lo, hi, step)
    if isinstance(e, ast.Constant) and e.value is None:
        return NEW
    if isinstance(e, ast.Constant) and e.value is Ellipsis:
        return ELLIPSIS
    return ("int", bound(lw, e, "position"))


def bound(lw, e: ast.AST, what: str) -> Dim:
    """An index bound as a dim: an int, a dim name, or ``+ - *`` of those (``D - 1``, ``2*H``, ``-K``)."""
    if isinstance(e, ast.Constant) and type(e.value) is int:
        if e.value > MAX_DIM:
            raise _lower._Unsupported(e, f"the {what} {lw.source_of(e)} is more than 2**63 - 1")
        return Dim.const(e.value)
    if isinstance(e, ast.Name):
        return _name_bound(lw, e, what)
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
        d = bound(lw, e.operand, what)
        return Dim.const(-1) * d if isinstance(e.op, ast.USub) else d
    if isinstance(e, ast.BinOp) and type(e.op) in _ARITH:
        a, b = bound(lw, e.left, what), bound(lw, e.right, what)
        symbol = _ARITH[type(e.op)]
        return a + b if symbol == "+" else a + Dim.const(-1) * b if symbol == "-" else a * b
    raise _lower._Unsupported(
        e,
        f"the {what} of an index must be an int, a dim, or + - * of those, not {lw.source_of(e)}; "
        "to pick entries by an int tensor use take(a, indices, axis)",
    )


def _name_bound(lw, e: ast.Name, what: str) -> Dim:
    name = e.id
    if lw.is_value(name):
        raise _lower._Unsupported(
            e,
            f"the {what} {name!r} is a tensor; index bounds are ints and dims known when the spec is "
            "built; to pick entries by an int tensor use take(a, indices, axis)",
        )
    d = lw.dim_of(name)
    if d is None:
        raise _lower._Unsupported(
            e,
            f"unknown dim {name!r} in an index; bounds are ints and the dims of the inputs' shapes"
            + _lower._did_you_mean(name, [*(lw.dims if lw.dim_env is None else lw.dim_env)]),
        )
    return d


# --------------------------------------------------------------------------------------------------
# split with a tuple target


def targets(key: Text) -> list[Text]:
    """The names of a tuple target ``i, f, g, o`` (an optional pair of brackets around them), each
    with its own place."""
    text = key.value
    offset = 0
    if text.startswith("(") and text.endswith(")"):
        text, offset = text[1:-1], 1
    out, start = [], 0
    for part in text.split(","):
        lead = len(part) - len(part.lstrip())
        out.append(Text(part.strip(), key.place_at(0, offset + start + lead), key.quoted))
        start += len(part) + 1
    return out


def is_tuple_target(key: Text) -> bool:
    return "," in key.value


def split_call(lw, tree: ast.AST, names: list[Text], label: str, own_entries=True) -> tuple[int, ...]:
    """``split(a, sections, axis=0)`` for ``len(names)`` names: one ``split`` node per piece, each the
    entry of its name (``own_entries``; inlined in a block, the nodes belong to the calling entry)."""
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "split"):
        raise _lower._Unsupported(
            tree,
            f"a tuple target ({', '.join(t.value for t in names)}) takes the pieces of a split: "
            f"write {', '.join(t.value for t in names)}: split(x, {len(names)}, axis=-1)",
        )
    args = dict(zip(("a", "sections", "axis"), tree.args))
    if len(tree.args) > 3:
        raise _lower._Unsupported(tree.args[3], "split takes at most 3 positional arguments")
    for kw in tree.keywords:
        if kw.arg not in ("a", "sections", "axis"):
            raise _lower._Unsupported(
                kw.value if kw.arg else kw,
                f"unknown keyword argument {kw.arg!r} for split; expected: a, sections, axis",
            )
        if kw.arg in args:
            raise _lower._Unsupported(kw.value, f"split got {kw.arg!r} twice")
        args[kw.arg] = kw.value
    for need in ("a", "sections"):
        if need not in args:
            raise _lower._Unsupported(tree, f"split is missing its argument {need!r}")
    if own_entries:
        lw.entry = names[0].value
    operand = lw.expr(args["a"])
    if isinstance(operand, Const):
        raise _lower._Unsupported(args["a"], "argument 'a' of split must be a tensor, not a number")
    sections = _sections(lw, args["sections"], len(names))
    axis = lw.int_literal(args["axis"], "axis of split") if "axis" in args else 0
    place = lw.place_of(tree)
    out = []
    for k, t in enumerate(names):
        if own_entries:
            lw.entry = t.value  # each piece is its own entry (its section of backward says so)
        attrs = (("sections", sections), ("axis", axis), ("piece", k))
        out.append(lw.add("split", (operand,), attrs, label, place))
    return tuple(out)


def _sections(lw, arg: ast.AST, count: int):
    """An int (that many equal pieces) or a list of sizes; either way ``count`` pieces."""
    if isinstance(arg, (ast.List, ast.Tuple)):
        sizes = tuple(bound(lw, e, "size") for e in arg.elts)
        if len(sizes) != count:
            raise _lower._Unsupported(
                arg, f"split gives {len(sizes)} pieces (one per size), but the target names {count}"
            )
        return sizes
    n = lw.int_literal(arg, "sections of split (a count, or a list of sizes)")
    if n != count:
        raise _lower._Unsupported(arg, f"split gives {n} pieces, but the target names {count}")
    return n


def tuple_entry(lw, decl, claim) -> list[Entry]:
    """A graph entry ``a, b, ...: split(...)``: each name a normal entry with its own place."""
    names = targets(decl.name)
    ok = [claim(t, "graph entry") for t in names]
    for t in names:
        lw.later.pop(t.value, None)
    lw.expr_text = decl.expr
    try:
        nids = _lowered(lw, decl, names)
    finally:
        lw.entry = None
    if nids is None:
        lw.failed.update(t.value for t in names)
        return []
    source = _lower.source_line(decl.expr.value)
    echo = _lower.echo_source(decl.expr.value)
    out = []
    for k, (t, nid, good) in enumerate(zip(names, nids, ok)):
        if not good and t.value in lw.scope:
            continue
        lw.name_node(nid, t.value, t.place)
        lw.scope[t.value] = nid
        out.append(Entry(t.value, nid, f"{source}[{k}]", t.place, f"{echo}[{k}]"))
    return out


def _lowered(lw, decl, names) -> tuple[int, ...] | None:
    tree, problem = _lower._parse(decl.expr)
    if problem is not None:
        lw.err(*problem)
        return None
    try:
        return split_call(lw, tree.body, names, lw.source_of(tree.body))
    except _lower._Poisoned:
        return None
    except _lower._Unsupported as exc:
        lw.err(lw.unsupported_place(exc), exc.message)
        return None


SPLIT_ALONE = (
    "split gives several values: name them with a tuple target, as 'a, b: split(x, 2, axis=-1)' "
    "(one name per piece)"
)
