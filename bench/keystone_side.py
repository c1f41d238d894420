"""The peer: Keystone 30.0.0 from the package index, in bench/.venv-keystone, on SQLite,
under gunicorn with the same worker count, with and without memcached.

Its data set is small (bcrypt at cost 12 makes each user and credential cost ~0.25 s
to create, and the measured paths do not depend on table sizes the way Latchkey's
decisions could): 10 users with `member` on a `bench` project, 10 application
credentials of `admin`. Cached in bench/.cache/keystone-30.0.0 (keys included).
"""

from __future__ import annotations

import getpass
import grp
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests

from bench.loadgen import Request
from bench.servers import Process, free_port, gunicorn, wait_http

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".venv-keystone"
VERSION = "30.0.0"
CACHE = ROOT / "bench" / ".cache" / f"keystone-{VERSION}"
ADMIN_PASSWORD = "bench-keystone-admin"
USER_PASSWORD = "bench-keystone-user"
COUNT = 10
JSON = {"Content-Type": "application/json"}


def ensure_venv(log: Any) -> None:
    if (VENV / "bin" / "keystone-manage").exists() and (VENV / "bin" / "gunicorn").exists():
        return
    log(f"installing keystone=={VERSION} into {VENV.relative_to(ROOT)} (about 2 minutes, once)")
    subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"keystone=={VERSION}", "gunicorn", "pymemcache"], check=True)


def write_conf(home: Path, memcached_port: int | None) -> Path:
    cache = (
        f"[cache]\nenabled = true\nbackend = dogpile.cache.pymemcache\n"
        f"memcache_servers = 127.0.0.1:{memcached_port}\n"
        if memcached_port
        else "[cache]\nenabled = false\n"
    )
    conf = home / ("keystone-memcached.conf" if memcached_port else "keystone.conf")
    conf.write_text(
        "[DEFAULT]\ndebug = false\n\n"
        f"[database]\nconnection = sqlite:///{home / 'keystone.db'}\n\n"
        "[token]\nprovider = fernet\n\n"
        f"[fernet_tokens]\nkey_repository = {home / 'fernet-keys'}\n\n"
        f"[fernet_receipts]\nkey_repository = {home / 'fernet-keys'}\n\n"
        f"[credential]\nkey_repository = {home / 'credential-keys'}\n\n" + cache
    )
    return conf


def _manage(conf: Path, *args: str) -> None:
    subprocess.run(
        [str(VENV / "bin" / "keystone-manage"), "--config-file", str(conf), *args],
        check=True,
        capture_output=True,
    )


def _token(url: str, identity: dict[str, Any], scope: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"auth": {"identity": identity}}
    if scope:
        body["auth"]["scope"] = scope
    response = requests.post(f"{url}/v3/auth/tokens", json=body, timeout=60)
    response.raise_for_status()
    return str(response.headers["X-Subject-Token"])


def password_identity(name: str, password: str) -> dict[str, Any]:
    return {
        "methods": ["password"],
        "password": {"user": {"name": name, "domain": {"id": "default"}, "password": password}},
    }


def project_scope(name: str) -> dict[str, Any]:
    return {"project": {"name": name, "domain": {"id": "default"}}}


def admin_token(url: str) -> str:
    return _token(url, password_identity("admin", ADMIN_PASSWORD), project_scope("admin"))


def serve(home: Path, conf: Path, port: int, workers: int, log_file: Path) -> Process:
    server = gunicorn(
        "keystone",
        VENV / "bin",
        "keystone_wsgi:application",
        port,
        workers,
        log_file,
        env={"OS_KEYSTONE_CONFIG_FILES": str(conf)},
        cwd=ROOT / "bench",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v3", 120, server.popen)
    except BaseException:
        server.stop()
        raise
    return server


def initialize(home: Path, public_url: str) -> Path:
    """A new Keystone in ``home`` (SQLite, keys, `admin` with ADMIN_PASSWORD, region
    RegionOne, the identity endpoint at ``public_url``); its config file. Also used by
    `make tempest` (tests/openstack/tempest_run.py)."""
    conf = write_conf(home, None)
    _manage(conf, "db_sync")
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    _manage(conf, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(conf, "credential_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(
        conf,
        "bootstrap",
        "--bootstrap-password",
        ADMIN_PASSWORD,
        "--bootstrap-region-id",
        "RegionOne",
        "--bootstrap-public-url",
        public_url,
    )
    return conf


def _seed(home: Path, workers: int, log_file: Path) -> dict[str, Any]:
    conf = initialize(home, "http://127.0.0.1:5000/v3")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(home, conf, port, workers, log_file):
        admin = admin_token(url)
        auth = {"X-Auth-Token": admin}
        project = requests.post(
            f"{url}/v3/projects",
            json={"project": {"name": "bench", "domain_id": "default"}},
            headers=auth,
            timeout=60,
        ).json()["project"]["id"]
        member = requests.get(f"{url}/v3/roles?name=member", headers=auth, timeout=60).json()[
            "roles"
        ][0]["id"]
        users = []
        for i in range(COUNT):
            created = requests.post(
                f"{url}/v3/users",
                json={
                    "user": {"name": f"u{i:02d}", "domain_id": "default", "password": USER_PASSWORD}
                },
                headers=auth,
                timeout=60,
            )
            created.raise_for_status()
            user_id = created.json()["user"]["id"]
            requests.put(
                f"{url}/v3/projects/{project}/users/{user_id}/roles/{member}",
                headers=auth,
                timeout=60,
            ).raise_for_status()
            users.append(f"u{i:02d}")
        admin_id = requests.get(
            f"{url}/v3/auth/tokens", headers={**auth, "X-Subject-Token": admin}, timeout=60
        ).json()["token"]["user"]["id"]
        credentials = []
        for i in range(COUNT):
            created = requests.post(
                f"{url}/v3/users/{admin_id}/application_credentials",
                json={
                    "application_credential": {"name": f"bench-{i}", "roles": [{"name": "member"}]}
                },
                headers=auth,
                timeout=60,
            )
            created.raise_for_status()
            body = created.json()["application_credential"]
            credentials.append({"id": body["id"], "secret": body["secret"]})
    return {"project": "bench", "users": users, "credentials": credentials}


def restore(home: Path, workers: int, log_file: Path, log: Any) -> dict[str, Any]:
    ensure_venv(log)
    if not (CACHE / "manifest.json").exists():
        log(f"seeding keystone; cached in {CACHE.relative_to(ROOT)}")
        staging = CACHE.with_name(CACHE.name + ".tmp")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        manifest = _seed(staging, workers, log_file)
        (staging / "manifest.json").write_text(json.dumps(manifest))
        staging.rename(CACHE)
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(CACHE, home)
    loaded: dict[str, Any] = json.loads((home / "manifest.json").read_text())
    return loaded


# -- scenarios -----------------------------------------------------------------------


def appcred_issue(manifest: dict[str, Any]) -> list[Request]:
    return [
        Request(
            "POST",
            "/v3/auth/tokens",
            JSON,
            json.dumps(
                {
                    "auth": {
                        "identity": {
                            "methods": ["application_credential"],
                            "application_credential": {"id": c["id"], "secret": c["secret"]},
                        }
                    }
                }
            ),
        )
        for c in manifest["credentials"]
    ]


def password_issue(manifest: dict[str, Any]) -> list[Request]:
    return [
        Request(
            "POST",
            "/v3/auth/tokens",
            JSON,
            json.dumps(
                {
                    "auth": {
                        "identity": password_identity(name, USER_PASSWORD),
                        "scope": project_scope(manifest["project"]),
                    }
                }
            ),
        )
        for name in manifest["users"]
    ]


def subject_tokens(url: str, manifest: dict[str, Any]) -> list[str]:
    return [
        _token(url, password_identity(name, USER_PASSWORD), project_scope(manifest["project"]))
        for name in manifest["users"]
    ]


def validate(admin: str, subjects: list[str]) -> list[Request]:
    return [
        Request("GET", "/v3/auth/tokens", {"X-Auth-Token": admin, "X-Subject-Token": s})
        for s in subjects
    ]
