"""The graph IR: frozen dataclasses, tuples not sets, so every later stage is deterministic."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradgen.diagnostics import Place
from gradgen.dims import Dim, shape_str


@dataclass(frozen=True)
class Const:
    """A numeric literal operand (``2.0`` in ``x * 2.0``)."""

    value: float | int
    text: str


Operand = "int | Const"  # a node id or a literal


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

    def node(self, i: int) -> Node:
        return self.nodes[i]

    def where(self, i: int) -> str:
        """'x, line 3': the provenance used in shape messages."""
        n = self.nodes[i]
        return f"{n.label}, line {n.place.line}"


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
