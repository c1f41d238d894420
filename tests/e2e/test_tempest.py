"""The bounded part of `make tempest` in `make test`: Tempest 47's identity tests for
tokens, application credentials, access rules, discovery, the catalog, projects, users,
roles and domains, with dynamic credentials, against a `latchkey serve` started from
this checkout on SQLite and on PostgreSQL (tests/openstack/tempest_run.py does the
work). No test may fail; the message names the ones that did and why.

Tempest lives in `.venv-tempest`, which scripts/tempest.sh installs from the package
index on first use (pinned; a stamp file makes later runs instant), so the suite needs
nothing beforehand. About a minute per database; the whole selection against Keystone
30 is `make tempest`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL
from tests.openstack.tempest_run import ROOT, run_selection, selection_regex

INSTALL_SCRIPT = ROOT / "scripts" / "tempest.sh"

# Whole modules, relative to tempest.api.identity (test_projects is not
# test_projects_negative).
CI_MODULES = [
    "v3.test_tokens",
    "v3.test_application_credentials",
    "v3.test_access_rules",
    "v3.test_api_discovery",
    "v3.test_catalog",
    "admin.v3.test_projects",
    "admin.v3.test_users",
    "admin.v3.test_roles",
    "admin.v3.test_domains",
]
TEMPEST_TIMEOUT = 600  # seconds per database; the selection takes about one minute


@pytest.fixture(scope="session")
def tempest_venv() -> Path:
    """Tempest's own virtual environment, installed on first use (no stdin needed)."""
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(INSTALL_SCRIPT), "install"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        # The interpreter Latchkey's venv was made from (3.11/3.12), not the venv's.
        env={**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.base_prefix + "/bin/python3"},
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"{INSTALL_SCRIPT} install failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_tempest_identity_selection(database: str, tempest_venv: Path, tmp_path: Path) -> None:
    summary = run_selection(
        f"latchkey-{database}",
        selection_regex(CI_MODULES),
        tmp_path,
        tempest_venv,
        workers=2,
        fast_hashing=True,
        timeout=TEMPEST_TIMEOUT,
        pg_admin_url=PG_ADMIN_URL,
        log=lambda message: print(message, file=sys.stderr),
    )
    modules = {test_id.split("[")[0].rsplit(".", 2)[0] for test_id in summary.tests}
    assert len(modules) == len(CI_MODULES), sorted(modules)  # every module was selected
    assert not summary.failed and not summary.fixture_errors, summary.failure_message()
    assert summary.ids("passed"), "nothing passed"
