"""Stage 6, format: black with one fixed Mode, never the user's configuration."""

from __future__ import annotations

import gc
import os
import re
import sys
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

# A module this long (an unrolled RNN of hundreds of steps) is formatted in parallel, one top-level
# definition per task: black takes about a third of a millisecond per line, so a 50,000-line module
# costs it 15 s on one core.  Below this, starting worker processes would cost more than it saves.
PARALLEL_LINES = 4000
# Where a module may be cut: before a top-level def or class that already follows two blank lines.
# black puts exactly two blank lines there whatever precedes them (not a decorator or a comment, which
# would sit on the line just above), so formatting the pieces apart gives the same text as formatting
# the whole (tests/test_fmt.py checks this on every shipped spec).
_CUT = re.compile(r"\n\n\n(?=(?:def|class) )")


def black_format(source: str) -> str:
    """``source`` in black's style; a long module is formatted in parallel pieces (same result)."""
    pieces = _CUT.split(source) if source.count("\n") >= PARALLEL_LINES else [source]
    workers = min(len(pieces), os.cpu_count() or 1)
    if workers < 2 or sys.platform != "linux":
        return _black_paused(source)
    try:
        return "\n\n".join(_format_pieces(pieces, workers))
    except (OSError, BrokenProcessPool):  # no processes to be had (a limit, a sandbox): one at a time
        return _black_paused(source)


def _format_pieces(pieces: list[str], workers: int) -> list[str]:
    """Each piece through black in a pool of forked workers (which inherit the imported black)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    order = sorted(range(len(pieces)), key=lambda k: -len(pieces[k]))  # longest first
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {k: pool.submit(_black_paused, pieces[k]) for k in order}
        return [futures[k].result() for k in range(len(pieces))]


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
