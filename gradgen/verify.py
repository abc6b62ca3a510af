"""The last line of defence: every generated file is checked before anything is written.

Spec text reaches the templates only through ``gradgen.escape.one_line``, and expressions are echoed from
their parse trees; this module does not trust either.  For each generated file it

1. compiles the text (a file that does not compile is never written);
2. checks what importing the file can do: module level holds only the docstring, imports of an
   allowlisted module, class and function definitions, ``__all__`` and, in the test file, inert constants
   and the three statements that load the module under test.  Everything evaluated while a ``class`` or
   ``def`` statement runs (bases, decorators, defaults, annotations, class bodies) must be inert: names,
   attributes, literals and containers of them, no call;
3. renders the same plan again with every free-text field (the description, the spec's path, every
   comment) replaced by a neutral placeholder, and requires both syntax trees to be identical once
   docstrings are set aside.  Spec text then provably changes nothing but comments and docstrings: it
   cannot add, remove or alter a statement, a name or a string constant anywhere in the file.

A failure is a bug in gradgen, never the spec's fault: ``UnsafeOutput`` reaches the command line as an
internal error (exit 3) and no file is written.
"""

from __future__ import annotations

import ast
import dataclasses
from itertools import zip_longest

from gradgen.plan import Line, Plan
from gradgen.render import render_module, render_test

# Modules a generated file may import (importing each of them has no effect but definitions).
MODULE_IMPORTS = frozenset(
    {"typing", "numpy", "math", "numbers", "operator", "functools", "itertools", "collections", "dataclasses"}
)
TEST_IMPORTS = MODULE_IMPORTS | {
    "importlib",
    "importlib.util",
    "pathlib",
    "pytest",
    "os",
    "sys",
    "re",
    "warnings",
}

# The Plan fields that carry spec text (besides every Line's comment); a new one must be listed here.
TEXT_FIELDS = ("description", "source_path")
PLACEHOLDER = "placeholder"

# Nodes of an expression that is evaluated at import time but runs nothing: no call, no operator but |.
_INERT = (
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Tuple,
    ast.List,
    ast.Dict,
    ast.Subscript,
    ast.BinOp,
    ast.BitOr,
    ast.UnaryOp,
    ast.USub,
    ast.UAdd,
    ast.Load,
)


class UnsafeOutput(Exception):
    """A generated file failed a safety check: a gradgen bug, reported as an internal error."""


def verify(plan: Plan, files: tuple[tuple[str, str], ...]) -> None:
    """Raise UnsafeOutput unless both generated files of ``plan`` (module, test) pass every check above.

    ``files`` are the formatted files; the neutral renderings are compared unformatted, since black
    keeps the syntax tree (docstrings aside) and the placeholders need no formatting.
    """
    (module_name, module_text), (test_name, test_text) = files
    neutral = neutral_plan(plan)
    for name, text, render, is_test in (
        (module_name, module_text, render_module, False),
        (test_name, test_text, render_test, True),
    ):
        tree = compiled(name, text)
        check_import_effects(name, tree, plan.name, is_test)
        check_same_code(name, tree, ast.parse(render(neutral), filename=name))


def neutral_plan(plan: Plan) -> Plan:
    """The plan with every free-text field replaced by a placeholder (the code fields unchanged)."""

    def lines(ls: tuple[Line, ...]) -> tuple[Line, ...]:
        return tuple(Line(line.code, PLACEHOLDER if line.comment else line.comment) for line in ls)

    changes = {f.name: lines(getattr(plan, f.name)) for f in dataclasses.fields(plan) if _is_lines(plan, f)}
    changes.update(dict.fromkeys(TEXT_FIELDS, PLACEHOLDER))
    return dataclasses.replace(plan, **changes)


def _is_lines(plan: Plan, field) -> bool:
    value = getattr(plan, field.name)
    return isinstance(value, tuple) and bool(value) and all(isinstance(v, Line) for v in value)


def compiled(name: str, text: str) -> ast.Module:
    """The file's syntax tree, after checking that it compiles."""
    try:
        tree = ast.parse(text, filename=name)
        compile(tree, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise UnsafeOutput(f"{name} does not compile: {exc}") from None
    return tree


# -- 2. what importing the file runs -------------------------------------------------------------------


def check_import_effects(name: str, tree: ast.Module, module: str, is_test: bool) -> None:
    body = list(tree.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    loader = _loader(module) if is_test else []
    for stmt in body:
        problem = _module_statement(stmt, is_test, loader)
        if problem:
            raise UnsafeOutput(f"{name}, line {stmt.lineno}: {problem}")
    if loader:
        raise UnsafeOutput(f"{name}: the statements that load the module under test are missing")


def _module_statement(stmt: ast.stmt, is_test: bool, loader: list[str]) -> str | None:
    """Why a module-level statement may not appear in a generated file, or None."""
    allowed = TEST_IMPORTS if is_test else MODULE_IMPORTS
    if isinstance(stmt, ast.Import):
        bad = [a.name for a in stmt.names if a.name not in allowed]
        return f"import of {', '.join(bad)}" if bad else None
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level or stmt.module not in allowed or any(a.name == "*" for a in stmt.names):
            return f"import from {stmt.module or '.'}"
        return None
    if isinstance(stmt, ast.FunctionDef):
        return _function(stmt, is_test)
    if isinstance(stmt, ast.ClassDef):
        return _class(stmt)
    if loader and ast.dump(stmt) == loader[0]:
        loader.pop(0)
        return None
    if _is_all(stmt) or (is_test and _is_inert_assignment(stmt)):
        return None
    return f"module-level {type(stmt).__name__} statement"


def _loader(module: str) -> list[str]:
    """The statements by which a test file loads the module under test, and nothing else, in order."""
    text = (
        f"_spec = importlib.util.spec_from_file_location({'gradgen_generated_' + module!r}, "
        f"Path(__file__).with_name({module + '.py'!r}))\n"
        "m = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(m)\n"
    )
    return [ast.dump(s) for s in ast.parse(text).body]


def _function(fn: ast.FunctionDef, is_test: bool) -> str | None:
    """A def runs its decorators, defaults and annotations at import time: they must be inert."""
    for d in fn.decorator_list:
        if not (is_test and _is_pytest_decorator(d)):
            return f"a decorator on {fn.name}"
    a = fn.args
    evaluated = [*a.defaults, *(d for d in a.kw_defaults if d is not None), fn.returns]
    evaluated += [
        arg.annotation for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if arg
    ]
    if not all(e is None or _inert(e) for e in evaluated):
        return f"a default or annotation of {fn.name} that runs code"
    return None


def _class(cls: ast.ClassDef) -> str | None:
    """A class statement runs its bases and its body at import time."""
    if cls.decorator_list or cls.keywords or not all(_inert(b) for b in cls.bases):
        return f"class {cls.name} runs code when it is defined"
    body = cls.body[1:] if cls.body and _is_docstring(cls.body[0]) else cls.body
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef):
            problem = _function(stmt, False)
            if problem:
                return problem
        elif isinstance(stmt, ast.AnnAssign):
            if not (isinstance(stmt.target, ast.Name) and _inert(stmt.annotation)):
                return f"a field of {cls.name} that runs code"
            if stmt.value is not None and not _inert(stmt.value):
                return f"a field of {cls.name} that runs code"
        elif not (_is_inert_assignment(stmt) or isinstance(stmt, ast.Pass)):
            return f"{type(stmt).__name__} statement in the body of class {cls.name}"
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_all(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Assign)
        and [getattr(t, "id", None) for t in stmt.targets] == ["__all__"]
        and isinstance(stmt.value, (ast.List, ast.Tuple))
        and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in stmt.value.elts)
    )


def _is_inert_assignment(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Assign)
        and all(isinstance(t, ast.Name) for t in stmt.targets)
        and _inert(stmt.value)
    )


def _inert(expr: ast.expr) -> bool:
    """Evaluating ``expr`` calls nothing: names, non-dunder attributes, literals, containers, ``a | b``."""
    for node in ast.walk(expr):
        if not isinstance(node, _INERT):
            return False
        if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.BitOr):
            return False
        if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            return False
    return True


def _is_pytest_decorator(d: ast.expr) -> bool:
    """``@pytest.mark.NAME`` or ``@pytest.fixture``, alone or called with inert arguments."""
    call = d if isinstance(d, ast.Call) else None
    target = call.func if call else d
    ok = _dotted(target) == "pytest.fixture" or _dotted(target).rpartition(".")[0] == "pytest.mark"
    if call is not None:
        ok = ok and all(_inert(a) for a in call.args) and all(_inert(k.value) for k in call.keywords)
    return ok


def _dotted(expr: ast.expr) -> str:
    """``a.b.c`` for a chain of attributes on a name, else ''."""
    parts = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    return ".".join([expr.id, *reversed(parts)]) if isinstance(expr, ast.Name) else ""


# -- 3. spec text changes nothing but comments and docstrings ------------------------------------------


def check_same_code(name: str, tree: ast.Module, neutral: ast.Module) -> None:
    """Both trees, docstrings blanked, dump to the same text (``ast.dump`` leaves out line numbers and
    columns, and comments are not in a syntax tree); a tree too deep to dump is compared node by node."""
    try:
        same = _dump(tree) == _dump(neutral)
    except RecursionError:
        same = None
    if same:
        return
    for k, (a, b) in enumerate(zip_longest(_signature(tree), _signature(neutral))):
        if a != b:
            raise UnsafeOutput(
                f"{name}: spec text changed the code, not only comments and docstrings "
                f"(syntax node {k}: {a!r} where the neutral rendering has {b!r})"
            )


def _dump(tree: ast.Module) -> str:
    """``ast.dump`` of the tree with every docstring read as ''.  Docstrings open the bodies of the
    module, classes and functions, so only statements are visited, not the (many) expression nodes."""
    stack: list[ast.AST] = [tree]
    blanked = []
    while stack:
        node = stack.pop()
        body = getattr(node, "body", None)
        if isinstance(node, _SCOPES) and body and _is_docstring(body[0]):
            blanked.append((body[0].value, body[0].value.value))
            body[0].value.value = ""
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                stack.extend(s for s in block if isinstance(s, (ast.stmt, ast.excepthandler)))
    try:
        return ast.dump(tree)
    finally:
        for constant, value in blanked:  # the caller's tree is left as it was
            constant.value = value


_SCOPES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _signature(tree: ast.Module):
    """The tree in breadth-first order, one (type, fields) tuple per node; docstrings read as ''.

    The child counts in each tuple fix the shape of the tree, so two trees with the same signature are
    the same tree.  Iterative (``ast.walk``), so a deep expression cannot exhaust the stack.
    """
    docstrings = set()
    for node in ast.walk(tree):
        scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, scopes) and node.body and _is_docstring(node.body[0]):
            docstrings.add(id(node.body[0].value))
    for node in ast.walk(tree):
        fields = []
        for field, value in ast.iter_fields(node):
            if isinstance(value, ast.AST):
                fields.append((field, type(value).__name__))
            elif isinstance(value, list):
                fields.append(
                    (field, tuple(type(v).__name__ if isinstance(v, ast.AST) else repr(v) for v in value))
                )
            elif id(node) in docstrings and field == "value":
                fields.append((field, "''"))
            else:
                fields.append((field, repr(value)))  # repr: 1, 1.0 and True are different constants
        yield type(node).__name__, tuple(fields)
