"""A JSON Schema (draft 2020-12) of the spec format, for editors (completion and inline errors).

``build_schema`` derives it from the loader's and lowerer's own lists (top-level keys, dtypes,
reserved names, op names), and ``gradgen/spec.schema.json`` is that schema as shipped in the wheel;
``tests/test_schema.py`` keeps the file equal to ``build_schema()`` and checks every spec in ``specs/``
against it.  The schema checks the document's structure; the expressions are checked by gradgen
itself (``gradgen check``), which also reports what a schema cannot see (shapes, unknown names).
Regenerate the file with ``python -m gradgen.schema > gradgen/spec.schema.json``.
"""

from __future__ import annotations

import json
import keyword
from importlib import resources

from gradgen.load import DTYPES, TOP_LEVEL_KEYS
from gradgen.lower import DERIVATIVE_KINDS, RESERVED, SHADOWED_MODULES
from gradgen.ops import callable_ops

SCHEMA_FILE = "spec.schema.json"
IDENT = "^[A-Za-z][A-Za-z0-9_]*$"
# A product of dims as the loader reads it (3*D, H * Dh): positive ints and names joined by *.
_FACTOR = "(?:0*[1-9][0-9]*|[A-Za-z][A-Za-z0-9_]*)"
PRODUCT = f"^ *{_FACTOR}( *\\* *{_FACTOR})+ *$"
# A tuple target (the pieces of a split): names joined by commas, optionally in brackets.
_IDENT = "[A-Za-z][A-Za-z0-9_]*"
TUPLE_TARGET = f"^\\(? *{_IDENT} *(, *{_IDENT} *)+\\)?$"


def _name(what: str, also_not: list[str]) -> dict:
    return {
        "type": "string",
        "pattern": IDENT,
        "not": {"enum": sorted(set(keyword.kwlist) | set(also_not))},
        "description": f"{what}: a Python identifier, not a keyword, not starting with an underscore.",
    }


def build_schema() -> dict:
    value_name_excluded = list(RESERVED)  # (an op's name is fine: ops and values have separate namespaces)
    dim = {
        "description": "A dim: a positive int, a symbolic name like N that stands for one size everywhere, "
        "or a product of those like 3*D or H*Dh.",
        "oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": IDENT, "not": {"enum": sorted(keyword.kwlist)}},
            {"type": "string", "pattern": PRODUCT},
        ],
    }
    shape = {
        "type": "array",
        "items": {"$ref": "#/$defs/dim"},
        "description": "A list of dims, like [N, D]; [] is a scalar.",
    }
    tensor = {
        "description": "An input: its shape, or {shape: [...], dtype: float|int|bool}.",
        "oneOf": [
            {"$ref": "#/$defs/shape"},
            {
                "type": "object",
                "properties": {
                    "shape": {"$ref": "#/$defs/shape"},
                    "dtype": {
                        "enum": list(DTYPES),
                        "description": "float (the default), int (class labels or indices) or bool (a mask); int and bool inputs are never differentiated.",
                    },
                },
                "required": ["shape"],
                "additionalProperties": False,
            },
        ],
    }
    properties = {
        "name": {
            **_name("The generated module's name (default: the file's stem)", list(SHADOWED_MODULES)),
        },
        "description": {"type": "string", "description": "One line, copied into the module's docstring."},
        "inputs": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"$ref": "#/$defs/value_name"},
            "additionalProperties": {"$ref": "#/$defs/tensor"},
            "description": "Ordered mapping name: shape; this order is the generated functions' argument order.",
        },
        "blocks": {
            "type": "object",
            "propertyNames": {"$ref": "#/$defs/block_name"},
            "additionalProperties": {"$ref": "#/$defs/block"},
            "description": "Named sub-graphs, called like ops (NAME(arg, ...)) and inlined at every call.",
        },
        "graph": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {
                "anyOf": [
                    {"$ref": "#/$defs/value_name"},
                    {
                        "type": "string",
                        "pattern": TUPLE_TARGET,
                        "description": "A tuple target a, b, ...: the pieces of split(x, sections, axis).",
                    },
                ]
            },
            "additionalProperties": {
                "type": "string",
                "minLength": 1,
                "description": "A Python expression over inputs and earlier entries: + - * / @ ** unary -, .T, "
                "static indexing x[...] and the ops: "
                + ", ".join(callable_ops())
                + " (`gradgen ops NAME` describes each).",
            },
            "description": "Ordered mapping name: expression, evaluated top to bottom.",
        },
        "output": {
            "type": "string",
            "pattern": IDENT,
            "description": "The graph entry (or input) returned; default: the last graph entry.",
        },
        "wrt": {
            "description": "The inputs to differentiate: one name or a list; default: every float input.",
            "oneOf": [
                {"type": "string", "pattern": IDENT},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": IDENT},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            ],
        },
        "derivatives": {
            "type": "array",
            "items": {"enum": list(DERIVATIVE_KINDS)},
            "uniqueItems": True,
            "description": "Derivative kinds to generate beyond forward/backward/value_and_grad (vjp, "
            "always generated): jvp, jacobian, hvp, hessian; default [vjp].",
        },
    }
    assert tuple(properties) == TOP_LEVEL_KEYS, "the schema must list exactly the loader's keys"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:gradgen:spec",
        "title": "gradgen spec",
        "description": "A tensor computation that `gradgen build` turns into a NumPy forward/backward module.",
        "type": "object",
        "properties": properties,
        "required": ["inputs", "graph"],
        "additionalProperties": False,
        "$defs": {
            "dim": dim,
            "shape": shape,
            "tensor": tensor,
            "value_name": _name("An input or graph entry name (not reserved)", value_name_excluded),
            "block_name": _name("A block's name, or a name inside a block", []),
            "block": _block(),
        },
    }


def _block() -> dict:
    name = {"$ref": "#/$defs/block_name"}
    return {
        "type": "object",
        "properties": {
            "params": {
                "description": "The parameters in call order: a list of names (any shapes), or a mapping "
                "name: shape whose dims are the block's own, bound and checked at every call.",
                "oneOf": [
                    {"type": "array", "items": name, "minItems": 1, "uniqueItems": True},
                    {
                        "type": "object",
                        "minProperties": 1,
                        "propertyNames": name,
                        "additionalProperties": {"$ref": "#/$defs/tensor"},
                    },
                ],
            },
            "graph": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": name,
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": "Ordered mapping name: expression over the params and earlier entries.",
            },
            "output": {**name, "description": "The entry (or param) returned; default: the last entry."},
        },
        "required": ["params", "graph"],
        "additionalProperties": False,
    }


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2) + "\n"


def schema_text() -> str:
    """The shipped schema file."""
    return resources.files("gradgen").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    print(render(build_schema()), end="")
