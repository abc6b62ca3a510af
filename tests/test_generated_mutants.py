"""The generated tests fail on every mutant of the mutation harness and pass on the real module.

tests/mutants.py builds each harness spec, makes its mutants (float32-only errors, a float64 leak from
dout, labels picked in reverse, tiny gradients negated, a square gradient transposed, a dropped
accumulation term, flipped kink conventions, ...) and runs the generated test file on each.  Marked
``mutants``: ``pytest -m "not mutants"`` leaves it out of a quick local run.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/mutants.py, any import mode
from mutants import EXPECTED, HARNESS_SPECS, MUTANTS, build, kill

pytestmark = pytest.mark.mutants


@pytest.mark.parametrize("spec", HARNESS_SPECS, ids=lambda p: p.stem)
def test_generated_tests_kill_every_mutant(spec, tmp_path):
    b = build(spec)
    control, killed = kill(b, tmp_path)
    assert control is None, f"the unmutated module {b.name} fails its own tests:\n{control}"
    survivors = [label for label, failure in killed.items() if failure is None]
    assert not survivors, f"{b.name}: the generated tests pass on these mutants: {survivors}"
    assert len(killed) >= 4  # the float32 wrappers at least


def test_every_mutant_runs_on_some_harness_spec():
    names = {spec.stem for spec in HARNESS_SPECS}
    for label, specs in EXPECTED.items():
        assert label in MUTANTS, label
        assert specs and set(specs) <= names, (label, specs)


def test_the_harness_reports_survivors(tmp_path):
    """A test file that checks nothing kills no mutant: the harness can tell a survivor."""
    b = build(HARNESS_SPECS[0])
    control, killed = kill(b, tmp_path, "def test_nothing():\n    pass\n")
    assert control is None
    assert killed and all(failure is None for failure in killed.values())
