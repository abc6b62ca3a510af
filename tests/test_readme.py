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


def _plain_blocks(text: str) -> list[str]:
    """Fenced blocks without a language, pairing each opening fence with its closing one."""
    blocks, current, lang = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang == "":
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_quick_start_makes_and_uses_a_virtual_environment_in_one_line():
    readme = (ROOT / "README.md").read_text()
    first = _plain_blocks(readme.split("## Quick start", 1)[1])[0].strip()
    assert "\n" not in first
    assert first.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")


def test_worked_example_copy_step_and_training_loop_run_as_written(tmp_path):
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    usage = readme.split("### Using the generated module", 1)[1]
    copy = next(b for b in _plain_blocks(usage) if "cp generated/mlp.py" in b).strip()
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "mlp.py").write_text((ROOT / "generated" / "mlp.py").read_text())
    subprocess.run(copy, shell=True, cwd=tmp_path, check=True)  # works when myproject/ does not exist
    train = next(b for b in _blocks(usage, "python") if "value_and_grad" in b and "for step" in b)
    (tmp_path / "myproject" / "train.py").write_text(train)
    proc = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path / "myproject", capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    losses = [float(line.split()[-1]) for line in proc.stdout.splitlines()]
    assert len(losses) >= 3 and losses == sorted(losses, reverse=True) and losses[-1] < losses[0] / 10
    shown = next(b for b in _plain_blocks(usage) if b.startswith("step   0"))
    assert proc.stdout == shown, "README's printed losses differ from what the loop prints"
