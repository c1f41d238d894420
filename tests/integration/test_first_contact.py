"""Issue 15, point 7: what a new operator meets first — `latchkey --help` lists the
commands an operator needs (not Flask's or Alembic's developer options), and `make run`
installs what serving needs, not the test tools. (The production warning printed once
per `latchkey serve`: tests/integration/test_metrics.py, which runs one.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from latchkey.frontdoors.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_COMMANDS = (
    "bootstrap",
    "serve",
    "db",
    "keys",
    "token",
    "secrets",
    "settings",
    "domain",
    "policy",
    "app-cred",
    "app-account",
)


def run(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        list(args),
        env={"LATCHKEY_HOME": str(tmp_path), "LATCHKEY_LOG_LEVEL": "ERROR"},
        catch_exceptions=False,
    )


def _listed(help_text: str) -> set[str]:
    commands = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in commands.splitlines() if line.startswith("  ")}


def test_help_lists_the_operator_commands_and_no_flask_options(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.exit_code == 0, result.output
    assert "--app" not in result.output
    assert "--env-file" not in result.output
    assert "--debug" not in result.output
    listed = _listed(result.output)
    assert set(OPERATOR_COMMANDS) <= listed
    assert not {"limiter", "openapi", "run", "shell", "routes"} & listed


def test_db_help_shows_upgrade_current_history_only(tmp_path: Path) -> None:
    result = run(tmp_path, "db", "--help")
    assert result.exit_code == 0, result.output
    assert _listed(result.output) == {"upgrade", "current", "history"}
    # The developer commands are hidden, not gone.
    hidden = run(tmp_path, "db", "downgrade", "--help")
    assert hidden.exit_code == 0 and "Revert" in hidden.output
    assert run(tmp_path, "db", "upgrade").exit_code == 0
    assert run(tmp_path, "db", "current").exit_code == 0


def _dry_run(target: str, venv: Path) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        [make, "-n", target, f"VENV={venv}", f"LATCHKEY_HOME={venv.parent / 'home'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_make_run_installs_the_service_without_the_test_extra(tmp_path: Path) -> None:
    installs = [
        line for line in _dry_run("run", tmp_path / "venv").splitlines() if "pip install" in line
    ]
    assert installs, "make run installs nothing into a fresh virtualenv"
    # What pip is asked for (the temporary path itself says "pytest-of-…").
    wanted = [line.split("pip install", 1)[1] for line in installs]
    assert all("[test]" not in w and "pytest" not in w for w in wanted), installs
    # The server extra: `pip install latchkey` alone is the relying services' middleware.
    assert any(line.rstrip().endswith('-e ".[server]"') for line in installs), installs
    # `make test` (its `venv`) installs the test extra beside the server.
    full = [
        line for line in _dry_run("venv", tmp_path / "venv").splitlines() if "pip install" in line
    ]
    assert any('-e ".[server,test]"' in line for line in full), full
