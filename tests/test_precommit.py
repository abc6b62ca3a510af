"""The hooks in .pre-commit-hooks.yaml, run by pre-commit itself on a throwaway repository (offline:
the hooks are `language: system`, so pre-commit installs nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture
def env(tmp_path):
    pytest.importorskip("pre_commit")
    bin_dir = str(Path(sys.executable).parent)  # where this environment's gradgen and pre-commit live
    return dict(
        os.environ,
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        PRE_COMMIT_HOME=str(tmp_path / "cache"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )


@pytest.fixture
def hooks_repo(tmp_path) -> Path:
    """A repository holding this checkout's .pre-commit-hooks.yaml, committed (as pre-commit needs)."""
    repo = tmp_path / "hooks"
    repo.mkdir()
    shutil.copy2(REPO / ".pre-commit-hooks.yaml", repo / ".pre-commit-hooks.yaml")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "hooks")
    return repo


@pytest.fixture
def project(tmp_path, env) -> Path:
    """A user's project: one spec, its generated files, all committed."""
    proj = tmp_path / "project"
    (proj / "specs").mkdir(parents=True)
    shutil.copy2(REPO / "specs" / "matmul.yaml", proj / "specs" / "matmul.yaml")
    build = subprocess.run(
        [sys.executable, "-m", "gradgen", "build", "specs/"],
        cwd=proj,
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stderr
    git(proj, "init", "-q")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "init")
    return proj


def pre_commit(project: Path, hooks_repo: Path, env, hook: str) -> subprocess.CompletedProcess:
    rev = git(hooks_repo, "rev-parse", "HEAD")
    config = {"repos": [{"repo": str(hooks_repo), "rev": rev, "hooks": [{"id": hook}]}]}
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "run", hook, "--all-files"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_hooks_file_declares_both_hooks():
    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"gradgen-check", "gradgen-build"}
    for h in hooks.values():
        assert h["language"] == "system" and h["pass_filenames"] is False
        assert h["entry"].split()[0] == "gradgen"


def test_check_hook_passes_on_fresh_files_and_fails_on_a_hand_edit(project, hooks_repo, env):
    ok = pre_commit(project, hooks_repo, env, "gradgen-check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "gradgen check" in ok.stdout and "Passed" in ok.stdout
    target = project / "generated" / "matmul.py"
    target.write_text(target.read_text().replace("def forward(", "def forward_edited(", 1))
    bad = pre_commit(project, hooks_repo, env, "gradgen-check")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert "stale: generated/matmul.py" in bad.stdout and "+def forward(" in bad.stdout
    assert "def forward_edited(" in target.read_text()  # the check hook never repairs


def test_build_hook_rewrites_a_stale_file_and_fails_the_commit(project, hooks_repo, env):
    target = project / "generated" / "matmul.py"
    original = target.read_text()
    target.write_text(original + "# edited\n")
    result = pre_commit(project, hooks_repo, env, "gradgen-build")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "files were modified by this hook" in result.stdout
    assert target.read_text() == original
    again = pre_commit(project, hooks_repo, env, "gradgen-build")
    assert again.returncode == 0, again.stdout + again.stderr
