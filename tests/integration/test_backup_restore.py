"""Backup and restore as docs/operations.md tells an operator to do it (issue 15, point 4).

Per backend: a backup with the real tools (SQLite's online backup API, ``pg_dump``),
changes after it (a token revoked, a user created), the database lost, a restore into
a fresh database served by a new app with the same key material (``master.key``),
then ``latchkey restore-fence``: application credentials made before the backup log in,
every token issued before the fence is refused — the one revoked after the backup
too — and relying services whose feed cursor is past the restored events see the fence.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import create_engine, make_url, text

from latchkey.frontdoors.cli.main import main
from tests.conftest import ADMIN_PASSWORD, PG_ADMIN_URL, Api, build_app, database_of, make_settings

PASSWORD = "restore-password-1"


def validity(api: Api, caller: str, token: str) -> int:
    """200 while ``token`` is good, 404 once invalid or revoked."""
    response = api.call("GET", "/v1/auth/tokens", caller, headers={"X-Subject-Token": token})
    return response.status_code


def credential_login(api: Api, credential: dict[str, Any]) -> str:
    body = {
        "auth": {"application_credential": {"id": credential["id"], "secret": credential["secret"]}}
    }
    response = api.call("POST", "/v1/auth/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is needed (PostgreSQL's client tools)"
    return found


def database_url(app: Flask) -> str:
    return str(app.extensions["latchkey"].settings.effective_database_url)


def back_up(app: Flask, folder: Path) -> Path:
    """The database, as docs/operations.md says: SQLite's online backup, or pg_dump."""
    url = make_url(database_url(app))
    if url.get_backend_name() == "sqlite":
        target = folder / "latchkey-backup.db"
        source, copy = sqlite3.connect(str(url.database)), sqlite3.connect(target)
        with copy:
            source.backup(copy)
        source.close()
        copy.close()
        return target
    target = folder / "latchkey.dump"
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([tool("pg_dump"), "--format=custom", f"--file={target}", libpq], check=True)
    return target


@pytest.fixture
def fresh_database(app: Flask, tmp_path: Path) -> Iterator[str]:
    """An empty database of the app's backend, dropped afterwards."""
    if make_url(database_url(app)).get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'latchkey.db'}"
        return
    name = "latchkey_restored_" + tmp_path.name[-20:].replace("-", "_").lower()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def restore(backup: Path, url: str) -> None:
    target = make_url(url)
    if target.get_backend_name() == "sqlite":
        Path(str(target.database)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backup, str(target.database))
        return
    libpq = target.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([tool("pg_restore"), "--no-owner", f"--dbname={libpq}", str(backup)], check=True)


def restore_fence(home: Path, url: str, before: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["restore-fence", "--before", before],
        env={
            "LATCHKEY_HOME": str(home),
            "LATCHKEY_DATABASE_URL": url,
            "LATCHKEY_LOG_LEVEL": "WARNING",
        },
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    fence: dict[str, Any] = json.loads(result.output[result.output.index("{") :])
    return fence


def test_restore_then_fence_keeps_credentials_and_refuses_every_older_token(
    app: Flask, api: Api, admin_token: str, tmp_path: Path, fresh_database: str
) -> None:
    project = api.ok("POST", "/v1/projects", admin_token, {"name": "web"})
    alice = api.ok("POST", "/v1/users", admin_token, {"name": "alice", "password": PASSWORD})
    api.ok("PUT", f"/v1/projects/{project['id']}/users/{alice['id']}/roles/member", admin_token)
    alice_token = api.login("alice", PASSWORD, project="web")
    credential = api.ok(
        "POST",
        f"/v1/users/{alice['id']}/application-credentials",
        alice_token,
        {"name": "ci", "project_id": project["id"]},
    )
    made_before_backup = credential_login(api, credential)

    backup = back_up(app, tmp_path)

    # After the backup, on the database about to be lost: a revocation, a new user.
    revoked = api.call(
        "DELETE", "/v1/auth/tokens", admin_token, headers={"X-Subject-Token": made_before_backup}
    )
    assert revoked.status_code == 204
    assert validity(api, admin_token, made_before_backup) == 404
    made_after_backup = credential_login(api, credential)
    api.ok("POST", "/v1/users", admin_token, {"name": "bob", "password": PASSWORD})
    lost_cursor = api.ok("GET", "/v1/revocations?since=0", admin_token)["cursor"]
    assert lost_cursor > 0

    # The disaster: a new node, a fresh database from the backup, the same master key.
    home = tmp_path / "new-home"
    home.mkdir()
    old_home = app.extensions["latchkey"].settings.home_path
    shutil.copy2(old_home / "master.key", home / "master.key")
    restore(backup, fresh_database)
    restored = build_app(make_settings(home, fresh_database))
    try:
        new = Api(restored.test_client())
        # What a restore brings back: the revocation made after the backup is gone.
        assert validity(new, admin_token, made_before_backup) == 200

        fence = restore_fence(home, fresh_database, "now")
        assert fence["kind"] == "all"
        time.sleep(0.01)  # tokens below are issued after the fence, not in its millisecond

        new_admin = new.login("admin", ADMIN_PASSWORD, project="admin")
        for token in (made_before_backup, made_after_backup, admin_token, alice_token):
            assert validity(new, new_admin, token) == 404
        # Credentials and passwords from before the backup work; what came after is lost.
        fresh = credential_login(new, credential)
        assert validity(new, new_admin, fresh) == 200
        assert validity(new, new_admin, new.login("alice", PASSWORD, project="web")) == 200
        bob = new.call(
            "POST",
            "/v1/auth/tokens",
            json={
                "auth": {
                    "password": {
                        "user": {"name": "bob", "domain": {"id": "default"}},
                        "password": PASSWORD,
                    }
                }
            },
        )
        assert bob.status_code == 401

        # A relying service polled the lost database past the restored events: the
        # fence is numbered past its cursor, so its next polls find it (the feed holds
        # an event back while ids below it are younger than a few seconds).
        assert fence["revocation_id"] > lost_cursor
        deadline = time.monotonic() + 15
        while True:
            feed = new.ok("GET", f"/v1/revocations?since={lost_cursor}", new_admin)
            kinds = [(event["kind"], event["subject"]) for event in feed["revocations"]]
            if ("all", "*") in kinds:
                break
            assert time.monotonic() < deadline, feed
            time.sleep(0.5)
        # New revocations after the fence get ids past it.
        gone = new.call("DELETE", "/v1/auth/tokens", new_admin, headers={"X-Subject-Token": fresh})
        assert gone.status_code == 204
        after = new.ok("GET", f"/v1/revocations?since={fence['revocation_id']}", new_admin)
        assert [e["kind"] for e in after["revocations"]] == ["token"]
        assert validity(new, new_admin, fresh) == 404
    finally:
        with restored.app_context():
            database_of(restored).session.remove()
            database_of(restored).engine.dispose()


def test_restore_fence_refuses_a_time_without_offset_or_in_the_future(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"LATCHKEY_HOME": str(tmp_path), "LATCHKEY_LOG_LEVEL": "WARNING"}
    for before, reason in (
        ("2026-01-01T00:00:00", "offset"),
        ("2999-01-01T00:00:00Z", "future"),
        ("yesterday", "ISO 8601"),
    ):
        result = runner.invoke(main, ["restore-fence", "--before", before], env=env)
        assert result.exit_code == 2, result.output
        assert reason in result.output
