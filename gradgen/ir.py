"""The graph IR: frozen dataclasses, tuples not sets, so every later stage is deterministic."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradgen.diagnostics import Place
from gradgen.dims import Dim, shape_str
from gradgen.numbers import RunNum


@dataclass(frozen=True)
class Const:
    """A number operand: a literal (``2.0`` in ``x * 2.0``), a folded number-only subexpression
    (``2 ** 0.5``, written as its value), or a number known only at run time (``num``: a dim used as a
    number, ``sqrt(K)``; ``value`` is None and ``text`` is how messages name it).  No gradient flows
    into any of them."""

    value: float | int | None
    text: str
    num: RunNum | None = None


Operand = "int | Const"  # a node id or a literal


@dataclass(frozen=True)
class Domain:
    """How the generated tests draw an input, as an op row's ``domain`` fact says: any real value,
    positive values, probability rows, or ints below ``bound`` (class labels, indices into a table)."""

    kind: str  # "any" | "positive" | "probs" | "labels" | "indices"
    bound: Dim | None = None  # labels and indices: how many classes, or rows of the table


ANY, POSITIVE, PROBS = Domain("any"), Domain("positive"), Domain("probs")


@dataclass(frozen=True)
class Inlined:
    """One level of block inlining: the call, and the entry of the called block a node comes from."""

    block: str  # the block's name
    caller: str  # the entry that makes the call (a graph entry, or an entry of the calling block)
    call_source: str  # the call's expression, e.g. "layernorm(x, g1, b1)"
    call_place: Place
    entry: str  # the block's entry that the node computes part of
    source: str  # that entry's expression
    place: Place  # that entry's place in the block
    is_output: bool = False  # the entry is the block's output (its value is the call's value)


def inlined_from(origin: tuple[Inlined, ...]) -> str:
    """' (in block 'ln', called by 'h1' at line 9)': where an inlined node's message comes from.

    Nested calls are listed from the innermost block outwards."""
    if not origin:
        return ""
    text = f"in block {origin[-1].block!r}"
    for k in range(len(origin) - 1, -1, -1):
        frame = origin[k]
        if k == 0:
            text += f", called by {frame.caller!r} at line {frame.call_place.line}"
        else:
            text += (
                f", called by {frame.caller!r} at line {frame.call_place.line}"
                f" in block {origin[k - 1].block!r}"
            )
    return f" ({text})"


@dataclass(frozen=True)
class Node:
    id: int
    op: str  # "input" or a key of gradgen.ops.TABLE
    args: tuple  # of node ids (int) and Const
    attrs: tuple[tuple[str, object], ...]
    name: str | None  # the spec's name when the node is an input or a graph entry
    label: str  # how messages refer to it: its name, or its source text
    place: Place
    entry: str | None = None  # the graph entry this node belongs to (None for inputs)
    note: str | None = None  # why the node differs from what the spec wrote (gradgen.rewrite)
    origin: tuple[Inlined, ...] = ()  # the block calls this node was inlined from, outermost first
    hint: str | None = None  # a variable name for an unnamed node (inlined block entries)

    def attr(self, key: str, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def refs(self) -> tuple[int, ...]:
        return tuple(a for a in self.args if isinstance(a, int))


@dataclass(frozen=True)
class InputInfo:
    node: int
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # "float" | "int"
    place: Place
    dim_places: tuple[Place, ...]


@dataclass(frozen=True)
class Entry:
    name: str
    node: int
    source: str  # the expression as written in the spec (for messages; never printed into code)
    place: Place
    text: str  # the parsed expression as one canonical line: what generated comments echo


@dataclass(frozen=True)
class Graph:
    path: str
    name: str
    description: str
    nodes: tuple[Node, ...]
    inputs: tuple[InputInfo, ...]
    entries: tuple[Entry, ...]
    output: int
    wrt: tuple[int, ...]
    dim_origin: tuple[tuple[str, str, Place], ...] = field(default=())  # dim -> (input, place)
    derivatives: tuple[tuple[str, Place], ...] = field(default=())  # kinds beyond vjp, where written

    def node(self, i: int) -> Node:
        return self.nodes[i]

    def where(self, i: int) -> str:
        """'x, line 3': the provenance used in shape messages."""
        n = self.nodes[i]
        # a graph entry computed by an inlined block is defined where its call is
        line = n.origin[0].call_place.line if n.origin and n.name else n.place.line
        return f"{n.label}, line {line}"


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str  # "float" | "int"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return shape_str(self.shape) + ("" if self.dtype == "float" else f" {self.dtype}")


@dataclass(frozen=True)
class TypedGraph:
    graph: Graph
    types: tuple[TensorType, ...]  # indexed by node id


def ancestors(nodes, roots) -> set[int]:
    """The ids of the nodes that the roots (an id or ids) read, directly or not, the roots included;
    ``nodes`` is indexed by id (a graph's, or a lowering's list).  Iterative: deep graphs are fine."""
    seen: set[int] = set()
    stack = [roots] if isinstance(roots, int) else list(roots)
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(nodes[i].refs)
    return seen


def perm_of(node: Node, rank: int) -> tuple[int, ...]:
    """The permutation a transpose node of a rank-``rank`` operand applies (axes None: reversed)."""
    axes = node.attr("axes")
    if axes is None:
        return tuple(reversed(range(rank)))
    return tuple(a % rank for a in axes)
