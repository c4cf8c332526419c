"""The README's two commands set a fresh machine up: scripts/check-system.sh finds the system
packages that are missing, installs them with apt as root, and otherwise stops before any test
with the command that installs them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-system.sh"


def needs_everything(packages: str) -> bool:
    """The server, its contrib modules, pg_cron for its major version, and the locale definitions."""
    names = packages.split()
    return {"postgresql", "postgresql-contrib", "locales"} <= set(names) and any(
        re.fullmatch(r"postgresql-\d+-cron", name) for name in names)


def check_system(purpose: str, bare_machine: Path, *, as_user: str | None = None,
                 path: str | None = None) -> subprocess.CompletedProcess[str]:
    """The script on a machine whose PostgreSQL and locale directories are empty."""
    env = {**os.environ, "PG_LIB_DIR": str(bare_machine), "PG_SHARE_DIR": str(bare_machine),
           "LOCALE_DEFS_DIR": str(bare_machine), "PATH": path or os.environ["PATH"]}
    prefix = ["runuser", "-u", as_user, "--"] if as_user else []
    return subprocess.run([*prefix, "bash", str(SCRIPT), purpose], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def bare_machine(tmp_path: Path) -> Path:
    bare = tmp_path / "empty"
    bare.mkdir()
    bare.chmod(0o755)
    tmp_path.chmod(0o755)
    return bare


def test_a_normal_user_is_told_the_exact_command(bare_machine: Path) -> None:
    result = check_system("test", bare_machine, as_user="nobody" if os.geteuid() == 0 else None)

    assert result.returncode == 1
    command = re.search(r"sudo apt-get update && sudo apt-get install -y (.+)$", result.stderr, re.M)
    assert command, result.stderr
    assert needs_everything(command[1]), result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="installing packages takes root")
def test_root_installs_what_is_missing_with_apt(bare_machine: Path, tmp_path: Path) -> None:
    """apt-get itself is replaced by a recorder: the test must not change the machine's packages."""
    calls = tmp_path / "apt-calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "apt-get").chmod(0o755)

    result = check_system("test", bare_machine, path=f"{fake}:{os.environ['PATH']}")

    assert result.returncode == 0, result.stderr
    update, install = calls.read_text().splitlines()
    assert update == "update -qq"
    assert install.split()[:3] == ["install", "-y", "-qq"]
    assert needs_everything(install), install


def test_nothing_is_missing_here() -> None:
    """This machine runs the suite, so it has everything: the script says nothing and succeeds."""
    result = subprocess.run(["bash", str(SCRIPT), "test"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


def test_make_checks_the_system_before_it_creates_the_virtualenv_or_runs_anything() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target, first_use in (("test", "$(BIN)/pytest"), ("test-faults", "$(BIN)/pytest"),
                              ("demo", "$(BIN)/python"), ("$(BIN)/.installed", "$(PYTHON) -m venv")):
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert recipe.index("scripts/check-system.sh") < recipe.index(first_use), target
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")
