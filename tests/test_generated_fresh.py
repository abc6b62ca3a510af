"""generated/ is the golden record of specs/: byte-identical to what `gradgen build specs/` writes.

Specs are built in memory with the same relative path the CLI sees when run from the repository root
(`specs/<file>`), since that path is part of each generated file's first line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gradgen.diagnostics import SpecError
from gradgen.pipeline import build_text

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"
GENERATED = REPO / "generated"
HINT = "generated/ is stale: run `gradgen build specs/` from the repository root and commit the result"


def spec_files() -> list[Path]:
    return sorted(list(SPECS.glob("*.yaml")) + list(SPECS.glob("*.yml")))


def build(spec: Path):
    rel = spec.relative_to(REPO).as_posix()
    try:
        return build_text(rel, spec.read_text(encoding="utf-8"))
    except SpecError as exc:
        pytest.fail(f"{rel} does not build:\n{exc}")


def test_there_are_specs_and_generated_files():
    assert len(spec_files()) >= 9
    assert GENERATED.is_dir()


@pytest.mark.parametrize("spec", spec_files(), ids=lambda p: p.name)
def test_generated_files_match_their_spec(spec):
    built = build(spec)
    assert [name for name, _ in built.files] == [f"{built.name}.py", f"test_{built.name}.py"]
    for name, content in built.files:
        path = GENERATED / name
        assert path.is_file(), f"{path.relative_to(REPO)} is missing. {HINT}"
        on_disk = path.read_bytes()
        if on_disk != content.encode("utf-8"):
            import difflib

            diff = "".join(
                list(
                    difflib.unified_diff(
                        on_disk.decode("utf-8", "replace").splitlines(keepends=True),
                        content.splitlines(keepends=True),
                        f"{name} (on disk)",
                        f"{name} (expected)",
                    )
                )[:60]
            )
            pytest.fail(
                f"{path.relative_to(REPO)} differs from what {spec.relative_to(REPO)} builds. {HINT}\n{diff}"
            )


def test_no_stray_generated_files():
    expected: set[str] = set()
    for spec in spec_files():
        expected.update(name for name, _ in build(spec).files)
    present = {p.name for p in GENERATED.iterdir() if p.is_file() and not p.name.startswith((".", "__"))}
    stray = sorted(present - expected)
    assert not stray, (
        f"files in generated/ that no spec in specs/ writes: {stray}; delete them "
        "(or restore their spec) and run `gradgen build specs/`"
    )
    assert not [p for p in GENERATED.iterdir() if p.is_dir() and p.name != "__pycache__"]
