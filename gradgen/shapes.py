"""Stage 3, shapes: one shape rule per op (from the op table), symbolic dims, broadcasting decided now."""

from __future__ import annotations

from gradgen.diagnostics import Diagnostic, SpecError, error
from gradgen.ir import Const, Graph, Node, TensorType, TypedGraph, inlined_from
from gradgen.ops import TABLE, ShapeError
from gradgen.ops_masks import COMPARISONS, EXPLAINS_MASKS, SYMBOL
from gradgen.ops_reduce import check_computed_indices


class RuleContext:
    """What a rule sees of its node: operand types, attributes, and where operands come from."""

    def __init__(self, graph: Graph, node: Node, types: list[TensorType | None]):
        self.graph = graph
        self.node = node
        self.types = [None if isinstance(a, Const) else types[a] for a in node.args]

    def attr(self, key: str, default=None):
        return self.node.attr(key, default)

    def t(self, i: int) -> TensorType:
        return self.types[i]

    def where(self, i: int) -> str:
        a = self.node.args[i]
        if isinstance(a, Const):
            return f"the number {a.text}"
        return self.graph.where(a)

    def fail(self, message: str):
        raise ShapeError(message)


def infer(graph: Graph) -> TypedGraph:
    """Give every node a type; raise SpecError listing every node whose shape rule failed."""
    types: list[TensorType | None] = []
    diags: list[Diagnostic] = []
    inputs = {i.node: i for i in graph.inputs}
    for node in graph.nodes:
        if node.op == "input":
            info = inputs[node.id]
            types.append(TensorType(info.shape, info.dtype))
            continue
        try:
            types.append(node_type(graph, node, types))
        except ShapeError as exc:
            diags.append(error(node.place, str(exc) + inlined_from(node.origin)))
            types.append(None)
    out = graph.nodes[graph.output]
    if types[out.id] is not None and types[out.id].dtype == "int" and out.op != "input":
        diags.append(
            error(
                out.place,
                f"the output {out.label} is an int tensor ({out.op}), which has no gradient; "
                "output a float value computed from it (a loss that picks with it, say)",
            )
        )
    if types[out.id] is not None and types[out.id].dtype == "bool":
        diags.append(
            error(
                out.place,
                f"the output {out.label} is a mask (bool), which has no gradient; return a float value, "
                f"such as where({out.label}, a, b)",
            )
        )
    if diags:
        raise SpecError(diags)
    return TypedGraph(graph, tuple(types))


def node_type(graph: Graph, node: Node, types: list[TensorType | None]) -> TensorType | None:
    """The type of one op node from its operands' types: None when an operand already failed (no
    cascade), ShapeError when the op's rule does not hold."""
    if any(isinstance(a, int) and types[a] is None for a in node.args):
        return None
    opdef = TABLE[node.op]
    ctx = RuleContext(graph, node, types)
    bad = [
        i
        for i, a in enumerate(node.args)
        if isinstance(a, int) and types[a].dtype == "int" and i not in opdef.int_args
    ]
    if bad:
        raise ShapeError(
            f"int tensor {ctx.where(bad[0])} cannot be used in {_what(node.op)}; "
            "int inputs are class labels or indices and are never differentiated"
        )
    masks = [
        i
        for i, a in enumerate(node.args)
        if isinstance(a, int) and types[a].dtype == "bool" and i not in opdef.bool_args
    ]
    if masks and node.op not in EXPLAINS_MASKS:
        raise ShapeError(_mask_misused(ctx, node, masks[0]))
    out = opdef.shape(ctx)
    if opdef.int_args:
        check_computed_indices(ctx, types)  # argmax's indices must range over the axis they index
    return out


def _mask_misused(ctx: RuleContext, node: Node, i: int) -> str:
    """A mask where numbers are needed: the message says how a mask selects numbers."""
    name = ctx.graph.nodes[node.args[i]].label
    return (
        f"a mask ({ctx.where(i)}) cannot be used in {_what(node.op)}; masks select values, they are "
        f"not numbers: write where({name}, a, b), a where the mask holds and b elsewhere "
        f"(where({name}, 1.0, 0.0) is the mask as numbers)"
    )


def _what(op: str) -> str:
    return {
        "add": "arithmetic (+)",
        "sub": "arithmetic (-)",
        "mul": "arithmetic (*)",
        "div": "arithmetic (/)",
        "neg": "arithmetic (unary -)",
        "pow": "arithmetic (**)",
        "matmul": "a matmul (@)",
    }.get(op, f"a comparison ({SYMBOL[op]})" if op in COMPARISONS.values() else op)
