"""Stage 6, format: black with one fixed Mode, never the user's configuration.

A long module (an RNN unrolled over thousands of steps gives 50,000 lines) is formatted in pieces of
a few hundred lines, in parallel where the platform allows.  black takes about 0.2 ms per line and
pass, and makes a second pass over a file whenever its first pass changed anything; the rendered code
is already in black's style except for a few long lines, so most pieces are done after one pass.  The
pieces are cut only before a top-level definition or between two statements of a body, where black's
output does not depend on what is around them: formatting the pieces gives the same bytes as
formatting the whole, which tests/test_fmt.py checks on every shipped spec and on random specs, cut
at every place the cutter allows.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

# Below this many lines a module is formatted whole (all shipped specs are).
PIECEWISE_LINES = 4000
PIECE_LINES = 400  # the size a piece grows to before it is cut at the next safe place
# Top level: before a def or class that already follows two blank lines (black puts exactly two there).
_CUT = re.compile(r"\n\n\n(?=(?:def|class) )")
# Inside a body: before a line that starts a statement at the body's own indent, which is neither part
# of the statement before it nor a definition (black puts a blank line before those) ...
_BODY_START = re.compile(r"    [A-Za-z_]")
_CONTINUES = ("elif", "else", "except", "finally", "case", "def", "class", "async")
# ... after a line of code (not a comment or decorator) in the body or in a block nested in it.
_STATEMENT = re.compile(r"    +[^\s#@)\]}]")
# A nested def or class: black puts a blank line after its body, so such a body is never cut.
_NESTED_DEF = re.compile(r"\n +(?:async +)?(?:def|class) ")
_WRAPPER = {"def": "def _gradgen_piece():", "class": "class _gradgen_piece:"}


def black_format(source: str) -> str:
    """``source`` in black's style."""
    return black_format_all([source])[0]


def black_format_all(sources: list[str]) -> list[str]:
    """Each source in black's style; the pieces of long ones are formatted together, in parallel."""
    if sum(s.count("\n") for s in sources) < PIECEWISE_LINES:
        return [_black_paused(s) for s in sources]
    split = [[_split_body(top) for top in _CUT.split(s)] for s in sources]
    # each piece ends in a newline, as black's output does: a piece black leaves alone takes one pass
    tasks = [p if p.endswith("\n") else p + "\n" for tops in split for pieces in tops for p in pieces]
    try:
        done = iter(_format_all(tasks))
    except Exception:  # a piece black refuses: format each whole, for black's own error and line
        return [_black_paused(s) for s in sources]
    return [_assemble(tops, done) or _black_paused(s) for s, tops in zip(sources, split)]


def _assemble(tops: list[list[str]], done) -> str | None:
    """One source from its formatted pieces (taken from ``done`` in order), unwrapping the bodies."""
    out, ok = [], True
    for pieces in tops:
        parts = [next(done)]
        for piece in pieces[1:]:
            wrapper, _, body = next(done).partition("\n")
            ok = ok and wrapper == piece.partition("\n")[0]  # black keeps it as it is
            parts.append(body)
        out.append("".join(parts))
    return "\n\n".join(out) if ok else None


def _split_body(top: str) -> list[str]:
    """A top-level def or class cut between statements of its body; each piece after the first is
    wrapped in a def or class of its own so that black sees a body at the same indent."""
    kind = top.split(" ", 1)[0]
    lines = top.split("\n")
    if kind not in _WRAPPER or len(lines) < 2 * PIECE_LINES or _NESTED_DEF.search(top):
        return [top]
    pieces, start, in_string = [], 0, False
    for i in range(1, len(lines) - 1):
        if lines[i - 1].count('"""') % 2:  # a docstring opens or closes on the line before
            in_string = not in_string
        if i - start >= PIECE_LINES and not in_string and _safe_cut(lines[i - 1], lines[i]):
            pieces.append("\n".join(lines[start:i]) + "\n")
            start = i
    pieces.append("\n".join(lines[start:]))
    return [pieces[0]] + [f"{_WRAPPER[kind]}\n{p}" for p in pieces[1:]]


def _safe_cut(before: str, line: str) -> bool:
    """Whether a body may be cut between these two lines: ``line`` starts a statement at the body's
    indent, and ``before`` is a whole statement, in the body or at the end of a block nested in it
    (no open bracket, block header or continuation at its end).  A cut that misjudges a statement (a
    bracket left open by a line before) makes a piece that black cannot parse, and then the whole
    module is formatted in one go."""
    if not _BODY_START.match(line) or line.split(None, 1)[0].rstrip(":") in _CONTINUES:
        return False
    code = before.split("  # ", 1)[0].rstrip()
    if not _STATEMENT.match(code):  # in the body or a block nested in it; not a comment or decorator
        return False
    return not code.endswith((":", ",", "\\", "(", "[", "{", '"""', "'''"))


def _format_all(sources: list[str]) -> list[str]:
    workers = min(len(sources), _cpus())
    if workers < 2 or sys.platform != "linux":
        return [_black_paused(s) for s in sources]
    try:
        return _format_in_parallel(sources, workers)
    except (OSError, BrokenProcessPool):  # no processes to be had (a limit, a sandbox): one at a time
        return [_black_paused(s) for s in sources]


def _cpus() -> int:
    """The CPUs this process may run on (a container's affinity, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _format_in_parallel(sources: list[str], workers: int) -> list[str]:
    """Each source through black in a pool of forked workers (which inherit the imported black)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    order = sorted(range(len(sources)), key=lambda k: -len(sources[k]))  # longest first
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {k: pool.submit(_black_paused, sources[k]) for k in order}
        return [futures[k].result() for k in range(len(sources))]


def _black_paused(source: str) -> str:
    with paused_gc():
        return _black(source)


@contextmanager
def paused_gc():
    """Python's cyclic garbage collector off for the block; reference counting still frees almost
    everything the stages make.  Collections over black's syntax tree of a long module (and over the
    planner's statements) grow with the heap and took more than half of a 2,000-entry build."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _black(source: str) -> str:
    import black

    mode = black.Mode(
        target_versions={black.TargetVersion.PY310},
        line_length=100,
        string_normalization=True,
        is_pyi=False,
        magic_trailing_comma=True,
        preview=False,
    )
    return black.format_str(source, mode=mode)
