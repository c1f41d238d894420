"""Latchkey's side of the bench: seeded databases (cached), tokens, scenarios."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests

from bench.loadgen import Request
from bench.seed import (
    ACTIONS,
    CONTAINER,
    ENVS,
    TEAMS,
    Scale,
    bench_settings,
    read_manifest,
    seed,
    write_manifest,
)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
PG_HOST = "127.0.0.1"
PG_USER = "postgres"
PG_DATABASE = "latchkey_bench"
JSON = {"Content-Type": "application/json"}


def cache_key(scale: Scale) -> str:
    digest = hashlib.sha256(scale.key().encode())
    for path in [ROOT / "bench" / "seed.py", *sorted((ROOT / "migrations").rglob("*.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pg_url(database: str = PG_DATABASE) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:5432/{database}"


def _psql(sql: str) -> None:
    subprocess.run(
        [
            "psql",
            "-h",
            PG_HOST,
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
    )


def _fresh_pg_database() -> None:
    _psql(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
    _psql(f'CREATE DATABASE "{PG_DATABASE}"')


def restore(backend: str, scale: Scale, home: Path, issuer: str, log: Any) -> dict[str, Any]:
    """A freshly seeded database for ``backend`` in ``home`` (from the cache when the
    seed script, the migrations and the scale are unchanged); the manifest."""
    cached = CACHE / f"{backend}-{cache_key(scale)}"
    if not (cached / "bench-manifest.json").exists():
        log(f"seeding {backend} ({scale.key()}); cached in {cached.relative_to(ROOT)}")
        staging = Path(tempfile.mkdtemp(prefix=f"bench-seed-{backend}-"))
        if backend == "postgres":
            _fresh_pg_database()
            url = pg_url()
        else:
            url = f"sqlite:///{staging / 'latchkey.db'}"
        manifest = seed(bench_settings(staging, url, issuer), scale, log=log)
        write_manifest(staging, manifest)
        if backend == "postgres":
            subprocess.run(
                [
                    "pg_dump",
                    "-h",
                    PG_HOST,
                    "-U",
                    PG_USER,
                    "-Fc",
                    "-f",
                    str(staging / "latchkey.pgdump"),
                    PG_DATABASE,
                ],
                check=True,
            )
        if cached.exists():
            shutil.rmtree(cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, cached)
        shutil.rmtree(staging)
        log(f"seeded {backend} in {manifest['seconds']} s")
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(cached, home)
    if backend == "postgres":
        _fresh_pg_database()
        subprocess.run(
            [
                "pg_restore",
                "-h",
                PG_HOST,
                "-U",
                PG_USER,
                "-d",
                PG_DATABASE,
                "--no-owner",
                "-j",
                "2",
                str(home / "latchkey.pgdump"),
            ],
            check=True,
        )
    return read_manifest(home)


def database_url(backend: str, home: Path) -> str:
    return pg_url() if backend == "postgres" else f"sqlite:///{home / 'latchkey.db'}"


@dataclass
class Tokens:
    admin: str
    credential: list[str]  # from the first credentials, by the login path (audited)
    offline: list[str]  # minted directly by the key ring: distinct, for offline checks
    by_project: dict[str, str] = field(default_factory=dict)  # a credential token each


def issue_tokens(
    backend: str, home: Path, issuer: str, manifest: dict[str, Any], count: int, offline: int
) -> Tokens:
    """Tokens made in-process with the seeded keys (the served workers accept them)."""
    from latchkey.app import create_app
    from latchkey.policy.context import CallContext
    from latchkey.tokens.service import Scope

    app = create_app(bench_settings(home, database_url(backend, home), issuer))
    with app.app_context():
        services = app.extensions["latchkey"]
        anonymous = CallContext(None, source_ip="127.0.0.1")
        admin = services.authentication.password(
            anonymous,
            {"name": "admin", "domain": {"id": "default"}},
            manifest["admin_password"],
            {"project": {"name": "admin", "domain": {"id": "default"}}},
        ).token
        issued = []
        by_project: dict[str, str] = {}
        for cred in manifest["credentials"][:count]:
            token = services.authentication.application_credential(
                anonymous, {"id": cred["id"]}, cred["secret"], None
            ).token
            issued.append(token)
            by_project.setdefault(cred["project_id"], token)
        domain = SimpleNamespace(id="default", name="Default")
        minted = []
        users = manifest["users"]
        for i in range(offline):
            user = users[i % len(users)]
            project = SimpleNamespace(id=user["project_id"], name="p", is_admin_project=False)
            minted.append(
                services.tokens.issue(
                    SimpleNamespace(id=user["id"], name=user["name"], kind="human"),
                    domain,
                    Scope(project=project, project_domain=domain),  # type: ignore[arg-type]
                    {"member", "reader"},
                    ["password"],
                ).token
            )
        services.database.remove()
        services.database.dispose()
    return Tokens(admin, issued, minted, by_project)


# -- set-up over HTTP, once the server runs -----------------------------------------------


def create_ldap_domain(url: str, admin: str, slapd: Any) -> str:
    from tests import ldap_server as seed_ldap

    options = {
        "url": slapd.url,
        "user": seed_ldap.EXAMPLE_READER_DN,
        "password": seed_ldap.READER_PASSWORD,
        "suffix": seed_ldap.EXAMPLE_BASE,
        "user_tree_dn": seed_ldap.EXAMPLE_PEOPLE_DN,
        "group_tree_dn": seed_ldap.EXAMPLE_GROUPS_DN,
        "user_enabled_attribute": seed_ldap.ENABLED_ATTRIBUTE,
        "user_enabled_mask": seed_ldap.EXAMPLE_ENABLED_MASK,
        "connection_timeout": 2,
    }
    response = requests.post(
        f"{url}/v1/domains",
        json={"name": "corp-ldap", "identity_backend": "ldap", "ldap": options},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def ldap_people() -> list[tuple[str, str]]:
    """The seeded people with a password under ou=people (the bulk users live elsewhere)."""
    from tests import ldap_server as seed_ldap

    return [(p.uid, p.password) for p in (seed_ldap.ALICE, seed_ldap.BOB, seed_ldap.DAVE)]


def create_secrets(url: str, tokens: Tokens, projects: list[str]) -> list[tuple[str, str, str]]:
    """One secret in each of ``projects``: (project id, secret id, token)."""
    made = []
    for project in projects:
        token = tokens.by_project[project]
        response = requests.post(
            f"{url}/v1/projects/{project}/secrets",
            json={"name": "kubeconfig", "payload": "apiVersion: v1\nkind: Config\n" + "x" * 2000},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating a secret: {response.status_code} {response.text[:300]}")
        made.append((project, str(response.json()["id"]), token))
    return made


# -- the scenarios ----------------------------------------------------------------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _container(project: str, i: int) -> dict[str, Any]:
    return {
        "type": CONTAINER,
        "id": f"c{i}",
        "project_id": project,
        "attributes": {
            "env": ENVS[i % len(ENVS)],
            "team": TEAMS[i % len(TEAMS)],
            "name": f"scratch-{i}" if i % 2 else f"data-{i}",
            "size": (i * 7919) % 5000,
            "public": i % 5 == 0,
            "tags": ["keep"] if i % 7 == 0 else ["tmp"],
        },
    }


def appcred_issue(manifest: dict[str, Any]) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/auth/tokens",
            JSON,
            json.dumps(
                {"auth": {"application_credential": {"id": c["id"], "secret": c["secret"]}}}
            ),
        )
        for c in manifest["credentials"]
    ]


def password_issue(manifest: dict[str, Any], users: int = 200) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/auth/tokens",
            JSON,
            json.dumps(
                {
                    "auth": {
                        "password": {
                            "user": {"name": u["name"], "domain": {"id": "default"}},
                            "password": manifest["user_password"],
                        }
                    },
                    "scope": {"project": {"id": u["project_id"]}},
                }
            ),
        )
        for u in manifest["users"][:users]
    ]


def validate_v1(tokens: Tokens) -> list[Request]:
    return [
        Request("GET", "/v1/auth/tokens", {**_bearer(tokens.admin), "X-Subject-Token": t})
        for t in tokens.credential
    ]


def validate_v3(tokens: Tokens) -> list[Request]:
    return [
        Request("GET", "/v3/auth/tokens", {"X-Auth-Token": tokens.admin, "X-Subject-Token": t})
        for t in tokens.credential
    ]


def introspect(manifest: dict[str, Any], tokens: Tokens) -> list[Request]:
    service = manifest["service"]
    basic = base64.b64encode(f"{service['credential_id']}:{service['secret']}".encode()).decode()
    headers = {
        "Authorization": f"Basic {basic}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return [
        Request("POST", "/oauth2/introspect", headers, urllib.parse.urlencode({"token": t}))
        for t in tokens.credential
    ]


def _policy_tokens(manifest: dict[str, Any], tokens: Tokens) -> list[tuple[str, str]]:
    return [
        (p, tokens.by_project[p]) for p in manifest["policy_projects"] if p in tokens.by_project
    ]


def authorize_role(manifest: dict[str, Any], tokens: Tokens) -> list[Request]:
    """`readers-read`: a rule on the principal's roles only."""
    out = []
    for i, (project, token) in enumerate(_policy_tokens(manifest, tokens)):
        body = {"action": f"{CONTAINER}:read", "resource": _container(project, i)}
        out.append(Request("POST", "/v1/authorize", {**JSON, **_bearer(token)}, json.dumps(body)))
    return out


def authorize_attribute(manifest: dict[str, Any], tokens: Tokens) -> list[Request]:
    """`write`: attribute conditions (env in, team = principal's team) against deny rules."""
    out = []
    for i, (project, token) in enumerate(_policy_tokens(manifest, tokens)):
        body = {"action": f"{CONTAINER}:write", "resource": _container(project, i)}
        out.append(Request("POST", "/v1/authorize", {**JSON, **_bearer(token)}, json.dumps(body)))
    return out


def authorize_batch(manifest: dict[str, Any], tokens: Tokens, size: int = 100) -> list[Request]:
    out = []
    for project, token in _policy_tokens(manifest, tokens):
        checks = [
            {"action": ACTIONS[j % len(ACTIONS)], "resource": _container(project, j)}
            for j in range(size)
        ]
        out.append(
            Request(
                "POST",
                "/v1/authorize/batch",
                {**JSON, **_bearer(token)},
                json.dumps({"checks": checks}),
            )
        )
    return out


def authorize_actions(manifest: dict[str, Any], tokens: Tokens) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/authorize/actions",
            {**JSON, **_bearer(token)},
            json.dumps({"resource": _container(project, i)}),
        )
        for i, (project, token) in enumerate(_policy_tokens(manifest, tokens))
    ]


def authorize_plan(manifest: dict[str, Any], tokens: Tokens) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/authorize/plan",
            {**JSON, **_bearer(token)},
            json.dumps(
                {"action": f"{CONTAINER}:write", "resource_type": CONTAINER, "project_id": project}
            ),
        )
        for project, token in _policy_tokens(manifest, tokens)
    ]


def ldap_login(domain_id: str) -> list[Request]:
    return [
        Request(
            "POST",
            "/v1/auth/tokens",
            JSON,
            json.dumps(
                {
                    "auth": {
                        "password": {
                            "user": {"name": uid, "domain": {"id": domain_id}},
                            "password": password,
                        }
                    }
                }
            ),
        )
        for uid, password in ldap_people()
    ]


def secret_read(made: list[tuple[str, str, str]]) -> list[Request]:
    return [
        Request("GET", f"/v1/projects/{project}/secrets/{secret}/payload", _bearer(token))
        for project, secret, token in made
    ]


def warm_every_project(
    url: str, manifest: dict[str, Any], tokens: Tokens, workers: int, rounds: int = 2
) -> None:
    """Build the policy engine of every seeded project in every worker: batches with a
    check on each project, ``workers`` at a time (a sync worker busy with one batch does
    not accept the next, so each worker gets one)."""
    from concurrent.futures import ThreadPoolExecutor

    token = tokens.credential[0]
    checks = [
        {"action": f"{CONTAINER}:read", "resource": {"type": CONTAINER, "project_id": p}}
        for p in manifest["projects"]
    ]

    def one(_: int) -> None:
        response = requests.post(
            f"{url}/v1/authorize/batch",
            json={"checks": checks},
            headers=_bearer(token),
            timeout=300,
        )
        response.raise_for_status()

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(rounds):
            list(pool.map(one, range(workers)))


def policy_everywhere(url: str, admin: str, manifest: dict[str, Any], workers: int) -> int:
    """Give every seeded project without one the same kind of 20-rule policy (over
    HTTP, as a tenant would): for the memory measure with 1,000 policies loaded."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.seed import tenant_policy

    members: dict[str, list[str]] = {}
    for user in manifest["users"]:
        members.setdefault(user["project_id"], []).append(user["id"])
    creds: dict[str, list[str]] = {}
    for cred in manifest["credentials"]:
        creds.setdefault(cred["project_id"], []).append(cred["id"])
    todo = [p for p in manifest["projects"] if p not in set(manifest["policy_projects"])]

    def put(project: str) -> None:
        response = requests.put(
            f"{url}/v1/projects/{project}/policy",
            json=tenant_policy(members[project], creds.get(project, [])),
            headers=_bearer(admin),
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"policy for {project}: {response.status_code} {response.text[:300]}"
            )

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, todo))
    return len(todo)


# -- the worst tenant document the limits allow (issue 13, class 1) ----------------------

WORST_STRINGS = ["env", "team", "name", "owner_email"]
WORST_1000_LENGTH = 850  # 1,000 checks of one such attribute stay under the 1 MiB body limit


def worst_batch(url: str, admin: str, project: str, token: str, checks: int) -> list[Request]:
    """Put the slowest document the default limits allow in ``project`` (over HTTP, as
    its admin would), and return batches that reach LATCHKEY_DECISION_MAX_COST
    against it: 4 checks of the ~50,000-unit document with every string attribute
    at 1,024 characters, or 1,000 checks of a ~200-unit one (tests/attacks/worst_policy.py)."""
    from tests.attacks.worst_policy import slow_pattern, worst_check, worst_document

    read = f"{CONTAINER}:read"
    if checks == 4:
        document = worst_document(read, CONTAINER, "env", max_cost=50_000)
        strings, length = WORST_STRINGS, 1024
    else:
        document = worst_document(read, CONTAINER, "env", max_cost=200, pattern=slow_pattern(52))
        strings, length = ["env"], WORST_1000_LENGTH
    response = requests.put(
        f"{url}/v1/projects/{project}/policy", json=document, headers=_bearer(admin), timeout=60
    )
    if response.status_code != 200:
        raise RuntimeError(f"worst policy: {response.status_code} {response.text[:300]}")
    body = {
        "checks": [worst_check(read, CONTAINER, project, strings, i, length) for i in range(checks)]
    }
    return [Request("POST", "/v1/authorize/batch", {**JSON, **_bearer(token)}, json.dumps(body))]
