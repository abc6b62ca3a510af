"""Derivative transformations over graphs: reverse mode, forward mode and batching, and the programs made
from them (the generated ``jvp``, ``hvp``, ``jacobian`` and ``hessian``).

Each transformation walks a program's nodes once and asks each node's op row (``gradgen/ops.py``) for
one rule; it never looks at which op it is.  The results are new nodes in the same IR, so the
transformations compose: ``hvp`` is forward mode applied to the reverse sweep (forward-over-reverse),
a Jacobian is a reverse sweep (or forward mode) batched over basis vectors, a Hessian is the
Hessian-vector product batched over basis vectors, and a third derivative would need no new rule.

- ``pullbacks``: the reverse sweep.  Cotangents flow from the output to the inputs; an elementwise op's
  cotangent is summed over the axes its operand was broadcast along, once, here (notes section 6); a
  value used more than once gets the sum of its cotangents (notes section 3).
- ``tangents``: forward mode.  A tangent has its value's shape; a tangent that an elementwise op got
  from a broadcast operand is broadcast to the result, here.
- ``batch``: every node that depends on a batched input gets a leading batch axis (JAX's vmap).
"""

from __future__ import annotations

from gradgen.builder import Builder, BuildError, Hint, Program, const, size
from gradgen.dims import Dim, numel
from gradgen.ir import Const, Node, TensorType, TypedGraph
from gradgen.ops import ROWS, Over


class Unsupported(Exception):
    """An op row lacks the rule a transformation needs (``what``: pullback, jvp or batch)."""

    def __init__(self, op: str, node: Node, what: str):
        super().__init__(f"op {op} has no {what} rule")
        self.op, self.node, self.what = op, node, what


class Rule:
    """What a graph-level rule sees: its node, the operands' types, the builder's arithmetic, and the
    tangents (forward mode), the cotangent ``g`` (reverse mode) or the batched operands (batching)."""

    def __init__(
        self, b: Builder, node: Node, *, tangents=None, g=None, batched=None, size_dim=None, batched_of=None
    ):
        self.b = b
        self.node = node
        self.tangents = tangents
        self.g = g
        self.batched = batched
        self._batched_of = batched_of or {}
        self.size_dim = size_dim  # the batch size
        self.types = [None if isinstance(a, Const) else b.types[a] for a in node.args]
        self.out = b.types[node.id]
        self.first_order = b.rules[node.id] is None  # a node of the spec's own graph
        # the builder's arithmetic and layout helpers, as the rules call them
        for name in ("add", "sub", "mul", "div", "neg", "sum", "sum_to", "expand", "broadcast", "full"):
            setattr(self, name, getattr(b, name))
        for name in ("zeros", "reshape", "transpose", "swap_last", "op", "shape", "type", "is_number"):
            setattr(self, name, getattr(b, name))

    y = property(lambda self: self.node.id)

    def x(self, i):
        return self.node.args[i]

    def t(self, i) -> TensorType | None:
        return self.types[i]

    def attr(self, key, default=None):
        return self.node.attr(key, default)

    def size(self, d: Dim) -> Const:
        return size(d)

    def note(self, text: str) -> None:
        """The rule the following nodes cite, more specific than the row's (a second-order line keeps
        citing the rule it differentiates)."""
        if self.first_order:
            self.b.rule = text

    def where(self, i):
        return f"operand {i}"

    def fail(self, message):
        raise BuildError(message)

    def called(self, x, word: str):
        """Name a value this rule made after what it is: d<value>_<word> (a rule's scale, say)."""
        if isinstance(x, int) and self.b.rules[x] is not None and self.b.hint is not None:
            self.b.hints[x] = self.b.hint.derive(suffix=f"_{word}", final=False)
        return x

    def batched_of(self, x):
        """Batching: the batched form of an earlier node, or None when it does not depend on the batch."""
        return self._batched_of.get(x) if isinstance(x, int) else None

    def pad(self, x: int, rank: int) -> int:
        """A batched value with axes of size 1 inserted after the batch axis, up to ``rank`` + 1 axes, so
        that it broadcasts against unbatched operands of rank ``rank`` as the unbatched value did."""
        have = len(self.b.shape(x)) - 1
        return self.b.expand(x, tuple(range(1, 1 + rank - have)))

    def node_like(self, first: int, **attrs) -> int:
        """This node's op with operand 0 replaced and some attributes changed."""
        given = dict(self.node.attrs)
        given.update(attrs)
        args = (first,) + tuple(self.node.args[1:])
        return self.b.node(self.node.op, args, tuple((k, given[k]) for k, _ in self.node.attrs))


# ------------------------------------------------------------------------------------------------
# the three transformations


def pullbacks(b: Builder, out: int, seed, wrt: list[int]) -> dict[int, int | None]:
    """The reverse sweep: the cotangent of every ``wrt`` node given the cotangent ``seed`` of ``out``."""
    nodes = b.nodes[: out + 1]
    needs = _on_path(nodes, set(wrt))
    adj: dict[int, object] = {out: seed}
    for node in reversed(nodes):
        if node.op == "input" or not needs[node.id] or node.id not in adj:
            continue
        row = ROWS[node.op]
        text = _reverse_text(b, node)
        since = len(b.nodes)
        with b.applying(node.id, text, _hint(b, node.id).derive(prefix="d")):
            cots = _pullback(row, Rule(b, node, g=adj[node.id]))
        merged: dict[int, object] = {}
        for i, c in enumerate(cots):
            a = node.args[i]
            if c is None or isinstance(a, Const) or not needs[a]:
                continue
            if row.elementwise and b.shape(a) != b.shape(node.id):
                with b.applying(node.id, _broadcast_text(b, node, row), None):
                    c = b.sum_to(c, b.shape(a))
            with b.applying(node.id, text, None):
                merged[a] = b.add(merged[a], c) if a in merged else c
        for a, c in merged.items():
            hint = _hint(b, a).derive(prefix="d")
            if a in adj and adj[a] is not None:
                with b.applying(node.id, text + ", accumulated over uses (notes section 3)", hint):
                    c = b.add(adj[a], c)
            adj[a] = c
            b.name_result(c, hint, since)
    return {w: adj.get(w) for w in wrt}


def tangents(b: Builder, seeds: dict[int, int]) -> dict[int, object]:
    """Forward mode: the tangent of every node (None: zero) given the tangents of some inputs."""
    tan: dict[int, object] = dict(seeds)
    for node in list(b.nodes):
        if node.op == "input" or node.id in tan:
            continue
        ts = [tan.get(a) if isinstance(a, int) else None for a in node.args]
        if all(t is None for t in ts):
            continue
        row = ROWS[node.op]
        hint = _hint(b, node.id).derive(suffix="_dot")
        since = len(b.nodes)
        with b.applying(node.id, _forward_text(b, node, row), hint):
            t = _jvp(row, Rule(b, node, tangents=ts))
            if t is not None and b.shape(t) != b.shape(node.id):
                t = b.broadcast(t, b.shape(node.id))
        b.name_result(t, hint, since)
        tan[node.id] = t
    return tan


def batch(b: Builder, n: Dim, seeds: dict[int, int], upto: int) -> dict[int, int]:
    """Batching: every node (below ``upto``) that depends on a batched seed, with a leading axis of n."""
    bat = dict(seeds)
    for node in list(b.nodes[:upto]):
        if node.op == "input" or node.id in bat:
            continue
        xs = [bat.get(a) if isinstance(a, int) else None for a in node.args]
        if all(x is None for x in xs):
            continue
        row = ROWS[node.op]
        hint = b.hints[node.id] or Hint(node.id)
        since = len(b.nodes)
        with b.applying(node.id, b.rules[node.id] or row.rule, hint):
            x = _batch(row, Rule(b, node, batched=xs, size_dim=n, batched_of=bat))
        b.name_result(x, hint, since)
        bat[node.id] = x
    return bat


def _pullback(row, r: Rule) -> tuple:
    if row.pullback is not None:
        return row.pullback(r)
    if row.partials is None:
        raise Unsupported(row.name, _source(r), "pullback")
    factors = row.partials(r)
    return tuple(None if f is None else _apply(r, r.g, f) for f in factors)


def _jvp(row, r: Rule):
    if row.jvp is not None:
        return row.jvp(r)
    if row.partials is not None:
        factors = row.partials(r)
        total = None
        for t, f in zip(r.tangents, factors):
            if t is not None and f is not None:
                total = r.add(total, _apply(r, t, f))
        return total
    if row.linear:
        rest = tuple(r.node.args[1:])
        return None if r.tangents[0] is None else r.b.node(r.node.op, (r.tangents[0],) + rest, r.node.attrs)
    raise Unsupported(row.name, _source(r), "jvp")


def _batch(row, r: Rule):
    """The row's batching rule; an elementwise row's may decline (None) and leave it to the general
    one: every batched operand padded so that its batch axis stays in front."""
    if row.batch is not None:
        x = row.batch(r)
        if x is not None or not row.elementwise:
            return x
    if not row.elementwise:
        raise Unsupported(row.name, _source(r), "batch")
    rank = r.out.rank
    args = tuple(r.node.args[i] if x is None else r.pad(x, rank) for i, x in enumerate(r.batched))
    return r.b.node(r.node.op, args, r.node.attrs)


def _source(r: Rule) -> Node:
    """The spec's node that a derived node comes from (for messages)."""
    anchor = r.b.anchors[r.node.id]
    while anchor is not None and r.b.anchors[anchor] is not None:
        anchor = r.b.anchors[anchor]
    return r.b.nodes[anchor] if anchor is not None else r.node


def _apply(r: Rule, t, factor):
    return r.div(t, factor.x) if isinstance(factor, Over) else r.mul(t, factor)


def _on_path(nodes, wrt: set[int]) -> list[bool]:
    needs = [False] * len(nodes)
    for n in nodes:
        needs[n.id] = n.id in wrt or (n.op != "input" and any(needs[a] for a in n.refs))
    return needs


def _hint(b: Builder, nid: int) -> Hint:
    return b.hints[nid] or Hint(nid)


def _reverse_text(b: Builder, node: Node) -> str:
    row = ROWS[node.op]
    return row.rule if b.rules[node.id] is None else f"{row.rule}, transposing: {b.rules[node.id]}"


def _broadcast_text(b: Builder, node: Node, row) -> str:
    return row.broadcast_rule or _reverse_text(b, node)


def _forward_text(b: Builder, node: Node, row) -> str:
    """Forward-mode lines cite the op's JVP rule; second-order lines the rule they differentiate."""
    if b.rules[node.id] is not None:
        return f"{b.rules[node.id]}, differentiated in forward mode"
    if row.jvp_rule:
        return row.jvp_rule
    return row.rule.replace(" rule", " JVP rule", 1) if " rule" in row.rule else f"{row.name} JVP rule"


# ------------------------------------------------------------------------------------------------
# the generated functions' programs


def _wrt(tg: TypedGraph) -> list[int]:
    return list(tg.graph.wrt)


def _out(b: Builder, x, shape) -> int:
    """A program output: zeros for a symbolic zero, a filled array for a number."""
    if x is None:
        return b.zeros(shape)
    if b.is_number(x):
        return b.full(shape, x)
    return x


def _tangent_inputs(b: Builder, wrt: list[int], param: bool = True) -> dict[int, int]:
    """One tangent per wrt input: an argument of the function, or (``param`` False) a stand-in that
    batching replaces by basis vectors."""
    return {w: b.input(f"{b.nodes[w].name}_dot", b.shape(w), w, param) for w in wrt}


def value_and_grad(tg: TypedGraph) -> tuple[Builder, dict[int, object]]:
    """The reverse sweep with the output's cotangent the number 1 (a scalar output)."""
    b = Builder(tg)
    grads = pullbacks(b, tg.graph.output, const(1), _wrt(tg))
    return b, grads


def jvp_program(tg: TypedGraph) -> Program:
    b = Builder(tg)
    wrt = _wrt(tg)
    tan = tangents(b, _tangent_inputs(b, wrt))
    out = tg.graph.output
    t_out = _out(b, tan.get(out), b.shape(out))
    return b.finish([out, t_out])


def hvp_program(tg: TypedGraph) -> Program:
    """Forward mode over the reverse sweep: Hv = d/dt grad(x + t v) at t = 0, in one pass."""
    b, grads = value_and_grad(tg)
    wrt = _wrt(tg)
    g_nodes = [_out(b, grads[w], b.shape(w)) for w in wrt]
    tan = tangents(b, _tangent_inputs(b, wrt))
    hv = [_out(b, tan.get(g), b.shape(w)) for g, w in zip(g_nodes, wrt)]
    out = tg.graph.output
    return b.finish([out, *g_nodes, *hv])


def sizes(tg: TypedGraph) -> tuple[Dim, Dim]:
    """(m, n): the number of output entries and of wrt entries, the Jacobian's rows and columns."""
    m = numel(tg.types[tg.graph.output].shape)
    n = Dim.const(0)
    for w in _wrt(tg):
        n = n + numel(tg.types[w].shape)
    return m, n


def jacobian_program(tg: TypedGraph, mode: str) -> Program:
    """J[i..., j...] = d out[i...] / d input[j...] for every wrt input (notes section 1), for a batch of
    basis vectors at once: cotangents through the reverse sweep ("rows") or tangents through forward
    mode ("columns")."""
    return _jacobian_rows(tg) if mode == "rows" else _jacobian_columns(tg)


def _jacobian_rows(tg: TypedGraph) -> Program:
    if tg.types[tg.graph.output].shape == ():  # one row: the gradient, no batch
        b, grads = value_and_grad(tg)
        blocks = [_out(b, grads[w], b.shape(w)) for w in _wrt(tg)]
        for w, block in zip(_wrt(tg), blocks):
            if b.rules[block] is not None:
                b.hints[block] = Hint(w, "J_", "")
        return b.finish([tg.graph.output, *blocks])
    b = Builder(tg)
    out, wrt = tg.graph.output, _wrt(tg)
    m, _ = sizes(tg)
    out_shape = b.shape(out)
    seed = b.input("d_seed", out_shape, out, param=False)  # a stand-in for the output's cotangent
    grads = pullbacks(b, out, seed, wrt)
    with b.applying(out, "reverse sweep for every output entry at once (one basis cotangent each)", None):
        basis = b.op("basis", n=m, offset=Dim.const(0), shape=out_shape)
    b.hints[basis] = Hint(out, "d", "")
    bat = batch(b, m, {seed: basis}, len(b.nodes))
    blocks = []
    for w in wrt:
        g = grads[w]
        shape = out_shape + b.shape(w)
        text = "the rows of the Jacobian, shaped out.shape + input.shape (notes section 1)"
        with b.applying(w, text, Hint(w, "J_", "", final=False)):
            if g is None or g not in bat:  # no path from w to the output
                blocks.append(b.zeros(shape))
            else:
                blocks.append(b.reshape(b.broadcast(bat[g], (m,) + b.shape(w)), shape))
        b.hints[blocks[-1]] = Hint(w, "J_", "")
    return b.finish([out, *blocks])


def _jacobian_columns(tg: TypedGraph) -> Program:
    b = Builder(tg)
    out, wrt = tg.graph.output, _wrt(tg)
    _, n = sizes(tg)
    seeds = _tangent_inputs(b, wrt, param=False)
    tan = tangents(b, seeds)
    t_out = tan.get(out)
    basis = _basis_seeds(b, wrt, seeds, n, "forward mode for every input entry at once")
    bat = batch(b, n, basis, len(b.nodes))
    out_shape = b.shape(out)
    blocks = []
    offset = Dim.const(0)
    for w in wrt:
        shape = out_shape + b.shape(w)
        count = numel(b.shape(w))
        text = "the columns of the Jacobian, shaped out.shape + input.shape (notes section 1)"
        with b.applying(w, text, Hint(w, "J_", "", final=False)):
            if t_out is None or t_out not in bat:
                blocks.append(b.zeros(shape))
            else:
                cols = b.transpose(bat[t_out], tuple(range(1, len(out_shape) + 1)) + (0,))
                part = b.op("slice_axis", cols, axis=len(out_shape), start=offset, stop=offset + count)
                blocks.append(b.reshape(part, shape))
        b.hints[blocks[-1]] = Hint(w, "J_", "")
        offset = offset + count
    return b.finish([out, *blocks])


def _basis_seeds(b: Builder, wrt, seeds, n: Dim, text: str) -> dict[int, int]:
    """For each wrt input, its block of the n basis vectors (unit vectors over all wrt entries)."""
    out = {}
    offset = Dim.const(0)
    for w in wrt:
        with b.applying(w, text + " (one basis tangent each)", None):
            out[seeds[w]] = b.op("basis", n=n, offset=offset, shape=b.shape(w))
        b.hints[out[seeds[w]]] = Hint(w, "", "_dot")
        offset = offset + numel(b.shape(w))
    return out


def hessian_program(tg: TypedGraph) -> Program:
    """Every block H[a][b] = d^2 out / (d a d b), shaped a.shape + b.shape: the Hessian-vector product
    program batched over the n basis vectors (one forward-over-reverse pass for all of them).  Batch row
    k of Hv for grad_b is d grad_b / d theta_k, so a's rows of it are H[a][b], shaped as it is."""
    b, grads = value_and_grad(tg)
    wrt = _wrt(tg)
    _, n = sizes(tg)
    g_nodes = [_out(b, grads[w], b.shape(w)) for w in wrt]
    seeds = _tangent_inputs(b, wrt, param=False)
    tan = tangents(b, seeds)
    basis = _basis_seeds(b, wrt, seeds, n, "Hessian-vector products for every input entry at once")
    bat = batch(b, n, basis, len(b.nodes))
    offsets, offset = [], Dim.const(0)
    for w in wrt:
        offsets.append(offset)
        offset = offset + numel(b.shape(w))
    blocks = []
    for wa, start in zip(wrt, offsets):
        for wb, gb in zip(wrt, g_nodes):
            hv = tan.get(gb)
            shape = b.shape(wa) + b.shape(wb)
            text = "the blocks of the Hessian, shaped a.shape + b.shape"
            with b.applying(wa, text, Hint(wa, "H_", f"_{b.nodes[wb].name}", final=False)):
                if hv is None or hv not in bat:
                    block = b.zeros(shape)
                else:
                    stop = start + numel(b.shape(wa))
                    rows = b.op(
                        "slice_axis", b.broadcast(bat[hv], (n,) + b.shape(wb)), axis=0, start=start, stop=stop
                    )
                    block = b.reshape(rows, shape)
            b.hints[block] = Hint(wa, "H_", f"_{b.nodes[wb].name}")
            blocks.append(block)
    return b.finish([tg.graph.output, *g_nodes, *blocks])
