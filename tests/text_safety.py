"""Helpers for the tests that spec text never becomes code (test_spec_text.py, test_text_injection.py).

- ``yaml_quoted``: any text (control characters, lone surrogates) as a double-quoted YAML scalar;
- ``code_tokens``: a Python file's tokens with string literals and comments left out (what runs);
- ``import_fresh``: execute a generated file as a fresh module and report every effect of doing so:
  audit events other than defining things, output, files created, names bound to anything but
  definitions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tokenize
import types
from pathlib import Path

# -- YAML ----------------------------------------------------------------------------------------------


def yaml_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar: printable ASCII as is, everything else escaped."""
    out = ['"']
    for c in text:
        code = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= code < 0x7F:
            out.append(c)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# -- tokens --------------------------------------------------------------------------------------------

_TEXT_TOKENS = {tokenize.STRING, tokenize.COMMENT, tokenize.NL}
_TEXT_TOKENS |= {getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}  # Python 3.12+: f-string text


def code_tokens(source: str) -> list[tuple[str, str]]:
    """Every token that is code: names, operators, numbers, line structure; not strings or comments."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [(tokenize.tok_name[t.type], t.string) for t in tokens if t.type not in _TEXT_TOKENS]


def comments_and_strings(source: str) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string for t in tokens if t.type in _TEXT_TOKENS - {tokenize.NL}]


# -- importing -----------------------------------------------------------------------------------------

_events: list[tuple[str, tuple]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _events is not None:
        _events.append((event, args))


sys.addaudithook(_audit)  # records only inside import_fresh

# What the generated files import, loaded now: importing a module that is not loaded yet is an effect.
import numpy  # noqa: E402, F401
import pytest  # noqa: E402, F401

# What defining a NamedTuple and functions raises: namedtuple compiles and evals its __new__.
_QUIET_EVENTS = {"exec", "compile", "object.__setattr__"}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def import_fresh(path: Path) -> tuple[types.ModuleType, list[str]]:
    """Run ``path`` as a new module (not in sys.modules); return it and every problem seen.

    A problem is: an audit event other than compiling, defining and reading files in ``path``'s folder
    (an import of a module not loaded yet, a write, a subprocess, a socket, ...); output on stdout or
    stderr; a file created or removed in ``path``'s folder or the working directory; a module-level
    name bound to something that is not a definition (a class, a function, a module, ``__all__``, or a
    constant dict, list or str of the test file).
    """
    global _events
    folder, cwd = path.parent.resolve(), Path.cwd()
    before, before_cwd = _tree(folder), _tree(cwd)
    spec = importlib.util.spec_from_file_location(f"gradgen_text_safety_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    out, err = io.StringIO(), io.StringIO()
    keep_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    _events = []
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            spec.loader.exec_module(module)
    finally:
        events, _events = _events, None
        sys.dont_write_bytecode = keep_bytecode
    problems = []
    for event, args in events:
        if event in _QUIET_EVENTS:
            continue
        if event == "open" and _reads_inside(args, folder):
            continue
        problems.append(f"audit event {event} {args!r}")
    if out.getvalue() or err.getvalue():
        problems.append(f"output: {out.getvalue()!r} {err.getvalue()!r}")
    if _tree(folder) != before or _tree(cwd) != before_cwd:
        problems.append("files were created or removed")
    for name, value in vars(module).items():
        if not (name.startswith("__") or _is_definition(name, value)):
            problems.append(f"module-level name {name} = {value!r}")
    return module, problems


def _reads_inside(args: tuple, folder: Path) -> bool:
    path, mode = args[0], args[1]
    if not isinstance(path, (str, os.PathLike)) or (mode not in (None, "r", "rb")):
        return False
    return Path(os.fspath(path)).resolve().is_relative_to(folder)


def _is_definition(name: str, value) -> bool:
    if isinstance(value, (type, types.FunctionType, types.ModuleType)):
        return True
    if name.isupper():  # the test file's tables (SIZES, WRT, EDGES, INDEX_BOUNDS, ...) and constants
        return isinstance(value, (dict, list, tuple, float))  # (verify checks them inert in the syntax)
    if name in ("m", "_spec"):  # the test file's handle on the module under test
        return isinstance(value, types.ModuleType) or type(value).__name__ == "ModuleSpec"
    return False
