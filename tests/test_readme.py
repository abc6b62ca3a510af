"""The README's worked example is the real generated code, and its spec is the real spec."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_worked_example_matches_generated_mlp():
    readme = (ROOT / "README.md").read_text()
    generated = (ROOT / "generated" / "mlp.py").read_text()
    example = next(b for b in _blocks(readme, "python") if b.startswith("def forward("))
    assert example in generated, "README's mlp excerpt is stale: copy forward/backward from generated/mlp.py"


def test_worked_example_spec_is_specs_mlp():
    readme = (ROOT / "README.md").read_text()
    spec = (ROOT / "specs" / "mlp.yaml").read_text()
    assert spec in _blocks(readme, "yaml"), "README's mlp spec differs from specs/mlp.yaml"


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e '.[dev]' && gradgen build specs/" in readme
    assert "\n```\npytest\n```\n" in readme


def test_blocks_example_spec_is_specs_transformer2():
    readme = (ROOT / "README.md").read_text()
    spec = (ROOT / "specs" / "transformer2.yaml").read_text()
    assert spec in _blocks(readme, "yaml"), "README's blocks example differs from specs/transformer2.yaml"
