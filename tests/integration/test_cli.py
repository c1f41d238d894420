"""The `latchkey` command as an operator runs it, on SQLite in a fresh home."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from latchkey.app import create_app
from latchkey.frontdoors.cli.main import main
from latchkey.settings import Settings

PASSWORD = "bootstrap-password-1"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, **env: str) -> Result:
    environ = {
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_PASSWORD_HASH_TIME_COST": "1",
        "LATCHKEY_PASSWORD_HASH_MEMORY_KIB": "1024",
        "LATCHKEY_LOG_LEVEL": "WARNING",
        **env,
    }
    result = CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)
    return result


def bootstrap(home: Path) -> None:
    assert run(home, "db", "upgrade").exit_code == 0
    result = run(home, "bootstrap", LATCHKEY_ADMIN_PASSWORD=PASSWORD)
    assert result.exit_code == 0, result.output


def test_bootstrap_is_idempotent_and_keeps_the_password(home: Path) -> None:
    bootstrap(home)
    again = run(home, "bootstrap", LATCHKEY_ADMIN_PASSWORD="another-password-2")
    assert again.exit_code == 0
    assert "nothing changed" in again.output
    issued = run(
        home, "token", "issue", "--user", "admin", "--project", "admin", LATCHKEY_PASSWORD=PASSWORD
    )
    assert issued.exit_code == 0, issued.output
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600


def test_bootstrap_generates_and_prints_a_password_once(home: Path) -> None:
    assert run(home, "db", "upgrade").exit_code == 0
    first = run(home, "bootstrap")
    line = next(x for x in first.output.splitlines() if x.startswith("admin password"))
    password = line.split(": ", 1)[1]
    second = run(home, "bootstrap")
    assert password not in second.output
    issued = run(home, "token", "issue", "--user", "admin", LATCHKEY_PASSWORD=password)
    assert issued.exit_code == 0, issued.output


def test_bootstrap_password_file(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file-password\n")
    assert run(home, "db", "upgrade").exit_code == 0
    result = run(home, "bootstrap", "--admin-password-file", str(secret))
    assert result.exit_code == 0
    assert "from-a-file-password" not in result.output
    issued = run(home, "token", "issue", "--user", "admin", "--password-file", str(secret))
    assert issued.exit_code == 0, issued.output


def test_wrong_password_is_a_clean_error(home: Path) -> None:
    bootstrap(home)
    result = run(home, "token", "issue", "--user", "admin", LATCHKEY_PASSWORD="nope")
    assert result.exit_code != 0
    assert "could not be verified" in result.output
    assert "Traceback" not in result.output


def test_keys_rotate_then_old_tokens_still_verify(home: Path) -> None:
    bootstrap(home)
    token = run(
        home, "token", "issue", "--user", "admin", "--project", "admin", LATCHKEY_PASSWORD=PASSWORD
    ).output.strip()
    before = json.loads(run(home, "keys", "list").output)
    rotated = json.loads(run(home, "keys", "rotate").output)
    after = {k["kid"]: k["state"] for k in json.loads(run(home, "keys", "list").output)}
    old_primary = next(k["kid"] for k in before if k["state"] == "primary")
    staged = next(k["kid"] for k in before if k["state"] == "staged")
    assert rotated["demoted"] == [old_primary] and rotated["promoted"] == [staged]
    assert after[old_primary] == "secondary" and after[staged] == "primary"
    verified = run(home, "token", "verify", token)
    assert verified.exit_code == 0, verified.output
    assert run(home, "keys", "retire", old_primary).exit_code == 0
    refused = run(home, "token", "verify", token)
    assert refused.exit_code != 0


@pytest.fixture
def served_app(home: Path) -> Iterator[str]:
    bootstrap(home)
    settings = Settings.load(environ={"LATCHKEY_HOME": str(home), "LATCHKEY_LOG_LEVEL": "WARNING"})
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_offline_verification_against_served_jwks(home: Path, served_app: str) -> None:
    # Offline, the expected issuer defaults to the JWKS URL's origin: issue for it.
    token = run(
        home,
        "token",
        "issue",
        "--user",
        "admin",
        "--project",
        "admin",
        LATCHKEY_PASSWORD=PASSWORD,
        LATCHKEY_ISSUER=served_app,
    ).output.strip()
    jwks = f"{served_app}/.well-known/jwks.json"
    result = run(home, "token", "verify", "--jwks-url", jwks, token)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["user"]["name"] == "admin"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert run(home, "token", "verify", "--jwks-url", jwks, forged).exit_code != 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_gunicorn_on_the_bind_address(home: Path) -> None:
    bootstrap(home)
    port = _free_port()
    env = {
        **os.environ,
        "LATCHKEY_HOME": str(home),
        "LATCHKEY_BIND": f"127.0.0.1:{port}",
        "LATCHKEY_WORKERS": "1",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "latchkey"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    body = json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        assert body["checks"]["database"]["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_domain_cli_configures_an_ldap_directory(home: Path, tmp_path: Path, slapd: Any) -> None:
    from tests import ldap_server as seed

    bootstrap(home)
    token = run(
        home, "token", "issue", "--user", "admin", "--project", "admin", LATCHKEY_PASSWORD=PASSWORD
    ).output.strip()
    options = tmp_path / "ldap.toml"
    options.write_text(
        "[ldap]\n"
        f'url = "{slapd.url}"\n'
        f'user = "{seed.EXAMPLE_READER_DN}"\n'
        f'password = "{seed.READER_PASSWORD}"\n'
        f'user_tree_dn = "{seed.EXAMPLE_PEOPLE_DN}"\n'
        f'group_tree_dn = "{seed.EXAMPLE_GROUPS_DN}"\n'
    )
    created = run(
        home, "domain", "create", "corp", "--ldap-config", str(options), LATCHKEY_TOKEN=token
    )
    assert created.exit_code == 0, created.output
    domain = json.loads(created.output)
    assert domain["identity_backend"] == "ldap" and domain["ldap_password_set"] is True
    assert seed.READER_PASSWORD not in created.output
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"password": "not-the-password"}))
    refused = run(
        home, "domain", "set-ldap", domain["id"], "--ldap-config", str(wrong), LATCHKEY_TOKEN=token
    )
    assert refused.exit_code != 0 and "ldap_bind_failed" in refused.output
    shown = json.loads(run(home, "domain", "show", domain["id"], LATCHKEY_TOKEN=token).output)
    assert shown["ldap"]["url"] == slapd.url
    assert run(home, "domain", "show", domain["id"]).exit_code != 0  # no token
