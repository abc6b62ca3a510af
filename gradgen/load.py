"""Stage 1, load: YAML text to a spec document whose every node carries its place in the file.

PyYAML's composer gives a node tree in which every node keeps its start mark (line and column); we walk
that tree ourselves, so duplicate keys, unknown keys and wrong kinds are caught here with their places,
and nothing in the spec is ever constructed into Python objects by the YAML library or evaluated.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

import yaml

from gradgen.diagnostics import Diagnostic, Place, SpecError, error
from gradgen.dims import parse_dim

TOP_LEVEL_KEYS = ("name", "description", "inputs", "blocks", "graph", "output", "wrt", "derivatives")
BLOCK_KEYS = ("params", "graph", "output")
INPUT_KEYS = ("shape", "dtype")
DTYPES = ("float", "int", "bool")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A spec is four levels deep (the spec, 'inputs', one input, its shape); PyYAML's composer recurses once
# per level, so a pathological file could exhaust Python's stack long before its memory.
MAX_YAML_DEPTH = 32
# NumPy 1.x arrays have at most 32 axes (NPY_MAXDIMS; NumPy 2 allows 64), and gradgen supports both.
MAX_RANK = 32
# The largest size of one NumPy axis (np.intp on a 64-bit platform); a literal dim above it cannot exist.
MAX_DIM = 2**63 - 1


@dataclass(frozen=True)
class Text:
    """A scalar from the file with its place; ``col_shift`` maps a column in ``value`` to the file."""

    value: str
    place: Place
    quoted: bool = False
    single_line: bool = True

    def place_at(self, line_offset: int, col_offset: int) -> Place:
        """The file place of character ``col_offset`` on line ``line_offset`` (0-based) of the value."""
        if not self.single_line:
            return self.place
        return Place(self.place.file, self.place.line, self.place.col + col_offset + self.quoted)


@dataclass(frozen=True)
class InputDecl:
    name: Text
    shape: tuple[Text, ...]
    shape_place: Place
    dtype: Text


@dataclass(frozen=True)
class EntryDecl:
    name: Text
    expr: Text


@dataclass(frozen=True)
class ParamDecl:
    """A block parameter: a bare name (``shape`` None), or a name with a declared shape and dtype."""

    name: Text
    shape: tuple[Text, ...] | None
    dtype: Text | None


@dataclass(frozen=True)
class BlockDecl:
    """A reusable sub-graph of ``blocks:``, inlined at every call."""

    name: Text
    params: tuple[ParamDecl, ...]
    graph: tuple[EntryDecl, ...]
    output: Text | None


@dataclass(frozen=True)
class SpecDoc:
    """The raw document: texts with places, nothing resolved yet."""

    path: str
    stem: str
    name: Text | None
    description: Text | None
    inputs: tuple[InputDecl, ...]
    graph: tuple[EntryDecl, ...]
    output: Text | None
    wrt: tuple[Text, ...] | None
    wrt_place: Place | None
    top_place: Place
    blocks: tuple[BlockDecl, ...] = ()
    derivatives: tuple[Text, ...] | None = None  # the derivative kinds asked for, as written


def _place(path: str, node) -> Place:
    return Place(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _kind(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null" and not node.value:
        return "empty"
    return f"{node.value!r}"


class _Walker:
    def __init__(self, path: str):
        self.path = path
        self.diags: list[Diagnostic] = []

    def err(self, node_or_place, message: str) -> None:
        place = node_or_place if isinstance(node_or_place, Place) else _place(self.path, node_or_place)
        self.diags.append(error(place, message))

    def text(self, node) -> Text:
        single = node.start_mark.line == node.end_mark.line
        return Text(str(node.value), _place(self.path, node), node.style in ("'", '"'), single)

    def scalar(self, node, what: str) -> Text | None:
        if not isinstance(node, yaml.ScalarNode) or (node.tag == "tag:yaml.org,2002:null" and not node.value):
            self.err(node, f"{what} must be a single value, not {_kind(node)}")
            return None
        return self.text(node)

    def mapping(self, node, what: str) -> list[tuple[Text, object]] | None:
        """The key/value pairs of a mapping node, refusing duplicate and non-scalar keys."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping, not {_kind(node)}")
            return None
        seen: dict[str, Place] = {}
        pairs = []
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key in {what}")
            if key is None:
                continue
            if key.value in seen:
                first = seen[key.value]
                self.err(
                    key.place, f"duplicate key {key.value!r} in {what} (first defined at line {first.line})"
                )
                continue
            seen[key.value] = key.place
            pairs.append((key, value_node))
        return pairs


def load(path: str, source: str) -> SpecDoc:
    """Parse YAML text into a SpecDoc; raise SpecError with every problem found."""
    stem = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    if _has_surrogate(path):
        raise SpecError([error(Place(path, 1, 1), _SURROGATE_PATH)])
    try:
        root = _compose(source)
    except _TooDeep as exc:
        place = Place(path, exc.mark.line + 1, exc.mark.column + 1)
        message = f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep; a spec needs 6 at most (a block param declared with its shape and dtype)"
        raise SpecError([error(place, message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = Place(path, mark.line + 1, mark.column + 1) if mark else Place(path, 1, 1)
        raise SpecError([error(place, f"YAML syntax error: {_yaml_problem(exc)}")]) from None
    except yaml.reader.ReaderError as exc:
        pos = min(exc.position, len(source))
        line = source.count("\n", 0, pos) + 1
        col = pos - (source.rfind("\n", 0, pos) + 1) + 1
        raise SpecError(
            [
                error(
                    Place(path, line, col),
                    f"YAML syntax error: character #x{exc.character:04x} "
                    f"is not allowed in a YAML file ({exc.reason})",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every other PyYAML error is marked
        message = " ".join(str(exc).split())
        raise SpecError([error(Place(path, 1, 1), f"YAML error: {message}")]) from None
    top = Place(path, 1, 1)
    if root is None:
        raise SpecError([error(top, "the spec file is empty; it needs at least 'inputs' and 'graph'")])
    bad_text = _surrogates(path, root)
    if bad_text:
        raise SpecError(bad_text)
    w = _Walker(path)
    pairs = w.mapping(root, "the spec")
    if pairs is None:
        raise SpecError(w.diags)
    fields: dict[str, tuple[Text, object]] = {}
    for key, value in pairs:
        if key.value not in TOP_LEVEL_KEYS:
            w.err(
                key.place,
                f"unknown top-level key {key.value!r}; expected one of: {', '.join(TOP_LEVEL_KEYS)}",
            )
            continue
        fields[key.value] = (key, value)
    for required in ("inputs", "graph"):
        if required not in fields:
            w.err(top, f"missing required key {required!r}")

    name = description = output = None
    if "name" in fields:
        name = w.scalar(fields["name"][1], "'name'")
    if "description" in fields:
        description = w.scalar(fields["description"][1], "'description'")
    if "output" in fields:
        output = w.scalar(fields["output"][1], "'output'")

    inputs: list[InputDecl] = []
    if "inputs" in fields:
        node = fields["inputs"][1]
        in_pairs = w.mapping(node, "'inputs'")
        if in_pairs is not None and not node.value:
            w.err(node, "'inputs' is empty; declare at least one input")
        for key, value in in_pairs or []:
            decl = _input(w, key, value)
            if decl is not None:
                inputs.append(decl)

    graph: list[EntryDecl] = []
    if "graph" in fields:
        node = fields["graph"][1]
        g_pairs = w.mapping(node, "'graph'")
        if g_pairs is not None and not node.value:
            w.err(node, "'graph' is empty; define at least one entry")
        for key, value in g_pairs or []:
            expr = w.scalar(value, f"the expression of {key.value!r}")
            if expr is not None:
                graph.append(EntryDecl(key, expr))

    blocks = _blocks(w, fields["blocks"][1]) if "blocks" in fields else ()

    wrt = wrt_place = None
    if "wrt" in fields:
        node = fields["wrt"][1]
        wrt_place = _place(path, node)
        if isinstance(node, yaml.SequenceNode):
            items = [w.scalar(item, "an entry of 'wrt'") for item in node.value]
            wrt = tuple(t for t in items if t is not None)
            if not node.value:
                w.err(node, "'wrt' is empty; name at least one float input")
        else:
            single = w.scalar(node, "'wrt'")
            wrt = (single,) if single is not None else ()

    derivatives = None
    if "derivatives" in fields:
        derivatives = _derivatives(w, fields["derivatives"][1])

    if w.diags:
        raise SpecError(w.diags)
    return SpecDoc(
        path,
        stem,
        name,
        description,
        tuple(inputs),
        tuple(graph),
        output,
        wrt,
        wrt_place,
        top,
        blocks,
        derivatives,
    )


def _derivatives(w: _Walker, node) -> tuple[Text, ...]:
    """The ``derivatives:`` list: kinds as written (which kinds exist is checked by lower)."""
    if not isinstance(node, yaml.SequenceNode):
        w.err(node, f"'derivatives' must be a list of derivative kinds like [vjp, hvp], not {_kind(node)}")
        return ()
    items = [w.scalar(item, "an entry of 'derivatives'") for item in node.value]
    return tuple(t for t in items if t is not None)


class _TooDeep(Exception):
    def __init__(self, mark):
        self.mark = mark


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses to nest more than MAX_YAML_DEPTH collections."""

    depth = 0

    def compose_node(self, parent, index):
        if self.depth >= MAX_YAML_DEPTH and (
            self.check_event(yaml.SequenceStartEvent) or self.check_event(yaml.MappingStartEvent)
        ):
            raise _TooDeep(self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(source: str):
    loader = _DepthLimitedLoader(source)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


_SURROGATE_PATH = "the spec's file name is not valid UTF-8; rename the file"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogates(path: str, root) -> list[Diagnostic]:
    """An error for every scalar holding a lone surrogate (a YAML "\\ud800" escape without its pair):
    such text cannot be written as UTF-8, so it can reach neither a generated file nor a message.  A
    whole pair ("\\ud83d\\ude00", as JSON writes characters beyond U+FFFF) is joined into its
    character, which PyYAML does not do."""
    diags = []
    seen: set[int] = set()
    stack = [root]
    while stack:  # iterative, and each node once: aliases may share a node many times
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and _has_surrogate(node.value):
            node.value = _join_pairs(node.value)
            lone = [(k, c) for k, c in enumerate(node.value) if "\ud800" <= c <= "\udfff"]
            if lone:
                k, c = lone[0]
                diags.append(
                    error(
                        _place(path, node),
                        f"lone surrogate U+{ord(c):04X} in this text (character {k + 1}); "
                        "a \\u escape between \\ud800 and \\udfff must be half of a pair",
                    )
                )
        elif isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                stack += [value, key]
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return sorted(diags, key=lambda d: d.place)


def _join_pairs(text: str) -> str:
    """Each high surrogate followed by a low one as the one character they encode; lone ones stay."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


# PyYAML's context phrases, in the spec author's words.
_YAML_CONTEXTS = {
    "while parsing a flow sequence": "in the [...] list that starts",
    "while parsing a flow mapping": "in the {...} mapping that starts",
    "while scanning a quoted scalar": "in the quoted string that starts",
    "while parsing a block mapping": "in the mapping that starts",
    "while parsing a block collection": "in the list that starts",
}


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with where the enclosing construct starts and a hint for the common slips."""
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem or "\t" in problem:
        return "tab character in indentation; YAML indents with spaces"
    context, mark = exc.context, exc.context_mark
    if context and problem.startswith("but "):
        problem = f"{context}, {problem}"
    elif (
        context
        and mark is not None
        and (
            exc.problem_mark is None
            or mark.line != exc.problem_mark.line
            or mark.column != exc.problem_mark.column
        )
    ):
        where = _YAML_CONTEXTS.get(context, context)
        problem = f"{problem} ({where} at line {mark.line + 1}, column {mark.column + 1})"
    if problem.startswith("mapping values are not allowed here"):
        problem += "; quote the value if it contains ': '"
    elif problem.startswith("expected <block end>"):
        problem += "; check the indentation"
    return problem


def _input(w: _Walker, key: Text, value, what: str = "input") -> InputDecl | None:
    dtype = Text("float", key.place)
    shape_node = value
    if isinstance(value, yaml.MappingNode):
        pairs = w.mapping(value, f"{what} {key.value!r}")
        fields = {}
        for k, v in pairs or []:
            if k.value not in INPUT_KEYS:
                w.err(
                    k.place, f"unknown key {k.value!r} in {what} {key.value!r}; expected 'shape' and 'dtype'"
                )
            else:
                fields[k.value] = v
        if "dtype" in fields:
            d = w.scalar(fields["dtype"], f"the dtype of {key.value!r}")
            if d is not None and d.value not in DTYPES:
                w.err(
                    d.place,
                    f"unknown dtype {d.value!r} for {what} {key.value!r}; expected 'float', 'int' or 'bool'",
                )
                return None
            dtype = d or dtype
        if "shape" not in fields:
            w.err(key.place, f"{what} {key.value!r} has no 'shape'")
            return None
        shape_node = fields["shape"]
    if not isinstance(shape_node, yaml.SequenceNode):
        w.err(
            shape_node,
            f"the shape of {what} {key.value!r} must be a list of dims like [N, D], not {_kind(shape_node)}",
        )
        return None
    dims = []
    ok = True
    for item in shape_node.value:
        t = w.scalar(item, f"a dim of {what} {key.value!r}")
        if t is None:
            ok = False
            continue
        if not t.quoted and is_int_text(t.value) and (int_too_long(t.value) or int(t.value) > MAX_DIM):
            w.err(
                t.place,
                f"dim {abbreviate(t.value)} of {what} {key.value!r} is larger than any NumPy axis can be "
                f"(2**63 - 1 = {MAX_DIM})",
            )
            ok = False
        elif not (is_positive_int(t.value) and not t.quoted) and not valid_dim_text(t.value):
            w.err(
                t.place,
                f"dim {t.value!r} of {what} {key.value!r} must be a positive int, a name like N "
                "or a product like 3*D",
            )
            ok = False
        dims.append(t)
    if len(dims) > MAX_RANK:
        w.err(shape_node, f"{what} {key.value!r} has {len(dims)} dims; NumPy arrays have at most {MAX_RANK}")
        return None
    if not ok:
        return None
    return InputDecl(key, tuple(dims), _place(w.path, shape_node), dtype)


def is_int_text(text: str) -> bool:
    """Decimal digits only (what YAML reads as a non-negative int, leading zeros and all)."""
    return text.isascii() and text.isdigit()


def int_too_long(text: str) -> bool:
    """More digits than any dim can have; ``int()`` of very long text is slow or refused (4300 digits)."""
    return len(text.lstrip("0")) > len(str(MAX_DIM))


def is_positive_int(text: str) -> bool:
    """A literal dim: a positive decimal int no larger than a NumPy axis can be."""
    return is_int_text(text) and not int_too_long(text) and 0 < int(text) <= MAX_DIM


def abbreviate(digits: str) -> str:
    """A long number as its first and last digits and its length, for a message."""
    if len(digits) <= 24:
        return digits
    return f"{digits[:10]}...{digits[-4:]} ({len(digits)} digits)"


def valid_dim_name(text: str) -> bool:
    return bool(IDENTIFIER.match(text)) and not keyword.iskeyword(text) and not text.startswith("_")


def valid_dim_text(text: str) -> bool:
    """A name like N, or a product of names and positive ints like 3*D or H*Dh."""
    if valid_dim_name(text):
        return True
    return "*" in text and text.isascii() and parse_dim(text) is not None


# --------------------------------------------------------------------------------------------------
# blocks: reusable sub-graphs


def _blocks(w: _Walker, node) -> tuple[BlockDecl, ...]:
    pairs = w.mapping(node, "'blocks'")
    out = []
    for key, value in pairs or []:
        block = _block(w, key, value)
        if block is not None:
            out.append(block)
    return tuple(out)


def _block(w: _Walker, key: Text, value) -> BlockDecl | None:
    what = f"block {key.value!r}"
    pairs = w.mapping(value, what)
    if pairs is None:
        return None
    fields = {}
    for k, v in pairs:
        if k.value not in BLOCK_KEYS:
            w.err(k.place, f"unknown key {k.value!r} in {what}; expected one of: {', '.join(BLOCK_KEYS)}")
        else:
            fields[k.value] = v
    for required in ("params", "graph"):
        if required not in fields:
            w.err(key.place, f"{what} has no {required!r}")
    if "params" not in fields or "graph" not in fields:
        return None
    params = _params(w, fields["params"], what)
    graph = _entries(w, fields["graph"], f"the graph of {what}")
    output = w.scalar(fields["output"], f"the output of {what}") if "output" in fields else None
    if params is None or graph is None:
        return None
    return BlockDecl(key, params, graph, output)


def _params(w: _Walker, node, what: str) -> tuple[ParamDecl, ...] | None:
    """``[x, g, b]`` (any shapes) or ``{x: [N, D], g: [D], ...}`` (shapes checked at every call)."""
    if isinstance(node, yaml.SequenceNode):
        names = [w.scalar(item, f"a param of {what}") for item in node.value]
        params = tuple(ParamDecl(t, None, None) for t in names if t is not None)
    elif isinstance(node, yaml.MappingNode):
        decls = [_input(w, k, v, "param") for k, v in w.mapping(node, f"the params of {what}") or []]
        params = tuple(ParamDecl(d.name, d.shape, d.dtype) for d in decls if d is not None)
    else:
        w.err(
            node, f"the params of {what} must be a list of names or a mapping name: shape, not {_kind(node)}"
        )
        return None
    if not node.value:
        w.err(node, f"{what} has no params; a block takes at least one tensor")
        return None
    return params


def _entries(w: _Walker, node, what: str) -> tuple[EntryDecl, ...] | None:
    pairs = w.mapping(node, what)
    if pairs is None:
        return None
    if not node.value:
        w.err(node, f"{what} is empty; define at least one entry")
        return None
    out = []
    for key, value in pairs:
        expr = w.scalar(value, f"the expression of {key.value!r}")
        if expr is not None:
            out.append(EntryDecl(key, expr))
    return tuple(out)
