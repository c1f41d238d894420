"""Seed a Latchkey database with the benchmark's data set, in-process, through the services.

1,000 projects, 10,000 users (10 per project, `member` there, a `team` attribute),
5,000 application credentials (one for each of the first 5,000 users), an `objects`
service in the catalog, and 100 projects with a 20-rule tenant policy. Every object
is made by Latchkey's own services (enforcement, audit, commits), as the API would
make it; only the password hashes are written in one bulk update afterwards: 10,000
Argon2id hashes at the production cost would take the better part of an hour, so
every seeded user shares one hash of `SEED_PASSWORD` made at that cost (each hash
carries its own salt and parameters; the login path cannot tell).

The result (database, `master.key`, and `bench-manifest.json` with the ids and the
credential secrets the load generator rotates through) is cached by `bench/run.py`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask_migrate import upgrade
from latchkey.app import create_app
from latchkey.identity.models import User
from latchkey.identity.passwords import PasswordHasher
from latchkey.policy.context import AuthContext, CallContext
from latchkey.settings import Settings
from sqlalchemy import event, func, update

ADMIN_PASSWORD = "bench-admin-password"
SEED_PASSWORD = "bench-user-password"
SERVICE_USER = "bench-service"
TEAMS = ("blue", "red", "green", "amber", "violet")
ENVS = ("prod", "staging", "dev", "test")
CONTAINER = "objects:container"
VERBS = ("read", "list", "write", "delete", "share", "tag")
ACTIONS = [f"{CONTAINER}:{verb}" for verb in VERBS]

OBJECTS_SERVICE: dict[str, Any] = {
    "type": "objects",
    "name": "Object store",
    "endpoints": [{"interface": "public", "url": "http://objects.example/v1", "region": "r1"}],
    "actions": ACTIONS,
    "resource_types": {
        CONTAINER: {
            "attributes": {
                "env": "string",
                "team": "string",
                "name": "string",
                "size": "integer",
                "public": "boolean",
                "tags": "list of string",
                "owner_email": {"type": "string", "sensitive": True},
            }
        }
    },
}


@dataclass(frozen=True)
class Scale:
    projects: int = 1000
    users: int = 10_000
    credentials: int = 5000
    policy_projects: int = 100
    rules: int = 20

    def key(self) -> str:
        return (
            f"p{self.projects}-u{self.users}-c{self.credentials}"
            f"-pp{self.policy_projects}-r{self.rules}"
        )


def bench_settings(home: Path, database_url: str, issuer: str) -> Settings:
    """What both the seeding process and the served workers run with: the defaults,
    except where the bench must pin a value (home, database, issuer, quiet logs)."""
    return Settings.from_mapping(
        {
            "home": str(home),
            "database_url": database_url,
            "issuer": issuer,
            "admin_password": ADMIN_PASSWORD,
            "log_level": "WARNING",
        }
    )


def tenant_policy(members: list[str], credential_ids: list[str]) -> dict[str, Any]:
    """Twenty rules of the kinds docs/policy.md shows: roles, attribute conditions,
    principal attributes, named users and credentials, kinds, globs, deny rules."""
    c = CONTAINER
    rules: list[dict[str, Any]] = [
        {
            "id": "readers-read",
            "effect": "allow",
            "actions": [f"{c}:read", f"{c}:list"],
            "principals": {"roles": ["reader"]},
        },
        {
            "id": "members-write-non-prod",
            "effect": "allow",
            "actions": [f"{c}:write", f"{c}:tag"],
            "principals": {"roles": ["member"]},
            "resource": {
                "type": c,
                "conditions": [{"attribute": "env", "op": "in", "value": ["staging", "dev"]}],
            },
        },
        {
            "id": "team-writes-own",
            "effect": "allow",
            "actions": [f"{c}:write"],
            "resource": {
                "type": c,
                "conditions": [{"attribute": "team", "op": "=", "principal_attribute": "team"}],
            },
        },
        {
            "id": "prod-never-deleted",
            "effect": "deny",
            "actions": [f"{c}:delete"],
            "resource": {
                "type": c,
                "conditions": [{"attribute": "env", "op": "=", "value": "prod"}],
            },
        },
        {
            "id": "apps-never-share",
            "effect": "deny",
            "actions": [f"{c}:share"],
            "principals": {"kinds": ["application"]},
        },
        {
            "id": "admins-everything",
            "effect": "allow",
            "actions": ["*"],
            "principals": {"roles": ["admin"]},
        },
        {
            "id": "big-public-never-written",
            "effect": "deny",
            "actions": [f"{c}:write"],
            "resource": {
                "type": c,
                "conditions": [
                    {"attribute": "public", "op": "=", "value": True},
                    {"attribute": "size", "op": ">", "value": 1_000_000},
                ],
            },
        },
        {
            "id": "scratch-glob",
            "effect": "allow",
            "actions": [f"{c}:delete"],
            "principals": {"roles": ["member"]},
            "resource": {
                "type": c,
                "conditions": [{"attribute": "name", "op": "glob", "value": "scratch-*"}],
            },
        },
        {
            "id": "tagged-keep",
            "effect": "deny",
            "actions": [f"{c}:delete"],
            "resource": {
                "type": c,
                "conditions": [{"attribute": "tags", "op": "in", "value": "keep"}],
            },
        },
        {
            "id": "ci-reads-staging",
            "effect": "allow",
            "actions": [f"{c}:read"],
            "principals": {"application_credentials": credential_ids[:2]},
            "resource": {
                "type": c,
                "conditions": [{"attribute": "env", "op": "=", "value": "staging"}],
            },
        },
    ]
    for i in range(len(rules), 20):
        user = members[i % len(members)]
        rules.append(
            {
                "id": f"user-{i}",
                "effect": "allow" if i % 3 else "deny",
                "actions": [f"{c}:{VERBS[i % len(VERBS)]}"],
                "principals": {"users": [user]},
                "resource": {
                    "type": c,
                    "conditions": [
                        {"attribute": "env", "op": "!=", "value": ENVS[i % len(ENVS)]},
                        {"attribute": "size", "op": "<", "value": 1000 * i},
                    ],
                },
            }
        )
    return {"rules": rules}


def _fast_sqlite(app: Flask) -> None:
    """Seeding only: no fsync per commit (the served workers keep the defaults)."""
    engine = app.extensions["latchkey"].database.engine
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA synchronous=OFF")

    engine.dispose()


def _ctx(user_id: str, project_id: str | None, roles: set[str], admin: bool = False) -> CallContext:
    auth = AuthContext(
        user_id=user_id,
        user_domain_id="default",
        token_id="bench-seed",
        roles=frozenset(roles),
        project_id=project_id,
        project_domain_id="default" if project_id else None,
        is_admin_project=admin,
    )
    return CallContext(auth, request_id="bench-seed", source_ip="127.0.0.1")


def seed(settings: Settings, scale: Scale, log: Any = print) -> dict[str, Any]:
    app = create_app(settings)
    started = time.monotonic()
    with app.app_context():
        _fast_sqlite(app)
        upgrade()
        services = app.extensions["latchkey"]
        services.bootstrap.run(ADMIN_PASSWORD)
        services.boundaries.current()
        anonymous = CallContext(None, source_ip="127.0.0.1")
        admin_token = services.authentication.password(
            anonymous,
            {"name": "admin", "domain": {"id": "default"}},
            ADMIN_PASSWORD,
            {"project": {"name": "admin", "domain": {"id": "default"}}},
        )
        admin = CallContext(AuthContext.from_claims(admin_token.claims), source_ip="127.0.0.1")
        admin_project = admin_token.claims["project"]["id"]
        services.catalog.create_service(admin, OBJECTS_SERVICE)

        projects = [
            services.directory.create_project(
                admin, {"name": f"p{i:04d}", "domain_id": "default"}
            ).id
            for i in range(scale.projects)
        ]
        log(f"  {len(projects)} projects ({time.monotonic() - started:.0f} s)")
        users: list[dict[str, str]] = []
        for i in range(scale.users):
            project = projects[i % scale.projects]
            user = services.accounts.create_user(
                admin,
                {
                    "name": f"u{i:05d}",
                    "domain_id": "default",
                    "attributes": {"team": TEAMS[i % len(TEAMS)]},
                },
            )
            services.roles.grant(admin, "project", project, "user", user.id, "member")
            users.append({"id": user.id, "name": user.name, "project_id": project})
        log(f"  {len(users)} users with a role ({time.monotonic() - started:.0f} s)")

        hasher = PasswordHasher(
            settings.password_hash_time_cost,
            settings.password_hash_memory_kib,
            settings.password_min_length,
        )
        shared_hash = hasher.hash(SEED_PASSWORD)
        services.database.session.execute(
            update(User)
            .where(User.id.in_([u["id"] for u in users]))
            .values(password_hash=shared_hash, password_changed_at=func.now())
        )
        services.database.session.commit()

        credentials: list[dict[str, str]] = []
        for user in users[: scale.credentials]:
            owner = _ctx(user["id"], user["project_id"], {"member", "reader"})
            created = services.credentials.create(
                owner,
                user["id"],
                {"name": "bench", "project_id": user["project_id"], "roles": ["member"]},
            )
            credentials.append(
                {
                    "id": created.credential.id,
                    "secret": created.secret_value,
                    "user_id": user["id"],
                    "project_id": user["project_id"],
                }
            )
        log(f"  {len(credentials)} application credentials ({time.monotonic() - started:.0f} s)")

        # A relying service: `service` role on a project of its own, and a credential
        # carrying it (OAuth 2.0 introspection of any token, on-behalf-of decisions).
        services_project = services.directory.create_project(
            admin, {"name": "services", "domain_id": "default"}
        ).id
        service_user = services.accounts.create_user(
            admin, {"name": SERVICE_USER, "domain_id": "default"}
        )
        services.roles.grant(admin, "project", services_project, "user", service_user.id, "service")
        service_credential = services.credentials.create(
            _ctx(service_user.id, services_project, {"service"}),
            service_user.id,
            {"name": "introspection", "project_id": services_project, "roles": ["service"]},
        )

        by_project: dict[str, list[str]] = {}
        for user in users:
            by_project.setdefault(user["project_id"], []).append(user["id"])
        creds_by_project: dict[str, list[str]] = {}
        for cred in credentials:
            creds_by_project.setdefault(cred["project_id"], []).append(cred["id"])
        policy_projects = projects[: scale.policy_projects]
        for project in policy_projects:
            document = tenant_policy(by_project[project], creds_by_project.get(project, []))
            assert len(document["rules"]) == scale.rules
            services.policies.put(admin, project, document)
        log(f"  {len(policy_projects)} tenant policies ({time.monotonic() - started:.0f} s)")
        services.database.remove()
    return {
        "scale": scale.key(),
        "seconds": round(time.monotonic() - started, 1),
        "admin_password": ADMIN_PASSWORD,
        "user_password": SEED_PASSWORD,
        "admin_project_id": admin_project,
        "projects": projects,
        "policy_projects": policy_projects,
        "users": users,
        "credentials": credentials,
        "service": {
            "user_id": service_user.id,
            "project_id": services_project,
            "credential_id": service_credential.credential.id,
            "secret": service_credential.secret_value,
        },
    }


def write_manifest(home: Path, manifest: dict[str, Any]) -> None:
    (home / "bench-manifest.json").write_text(json.dumps(manifest))


def read_manifest(home: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((home / "bench-manifest.json").read_text())
    return loaded
