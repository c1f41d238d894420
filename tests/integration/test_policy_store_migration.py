"""Migration 0018 merges the project and the domain policy tables into one store:
versions saved before it (and which of them is active) stay readable through the
API after it, and its downgrade puts them back where they were."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, text

from tests.conftest import ADMIN_PASSWORD, PG_ADMIN_URL, Api, build_app, database_of, make_settings

BEFORE = "f6a8b0c30017"
AUTHOR = "someone-who-left"


def rules(*ids: str) -> dict[str, Any]:
    return {
        "rules": [{"id": i, "effect": "deny", "actions": ["secrets:secret:delete"]} for i in ids]
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own: the test walks the schema down and up again."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = "latchkey_migration_" + secrets.token_hex(4)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_policy_versions_saved_before_the_merge_stay_readable(
    tmp_path: Path, database_url: str
) -> None:
    app = build_app(make_settings(tmp_path, database_url))
    api = Api(app.test_client())
    with app.app_context():
        app.extensions["latchkey"].bootstrap.run(ADMIN_PASSWORD)
        database_of(app).session.remove()
    admin = api.admin_token()
    project = api.ok("POST", "/v1/projects", admin, {"name": "web"})["id"]

    with app.app_context():
        database_of(app).session.remove()
        downgrade(revision=BEFORE)
        # As the code of f6a8b0c30017 left them: project version 2 saved, 1 active
        # again; domain version 2 active.
        as_json = "CAST(:d AS JSON)" if database_url.startswith("postgresql") else ":d"
        with database_of(app).engine.begin() as conn:
            for scope, versions, column, scope_id, active in (
                ("project_policy", "policy_version", "project_id", project, 1),
                ("domain_policy", "domain_policy_version", "domain_id", "default", 2),
            ):
                for version, ids in ((1, ("a",)), (2, ("a", "b"))):
                    conn.execute(
                        text(
                            f"INSERT INTO {versions} ({column}, version, document, author_id,"  # noqa: S608 (constants)
                            f" created_at) VALUES (:s, :v, {as_json}, :author, :at)"
                        ),
                        {
                            "s": scope_id,
                            "v": version,
                            "d": json.dumps(rules(*ids)),
                            "author": AUTHOR,
                            "at": f"2026-0{version}-01 00:00:00",
                        },
                    )
                conn.execute(
                    text(
                        f"INSERT INTO {scope} ({column}, active_version, updated_at)"  # noqa: S608 (constants)
                        " VALUES (:s, :v, '2026-03-01 00:00:00')"
                    ),
                    {"s": scope_id, "v": active},
                )
        upgrade()
        database_of(app).engine.dispose()

    def check(path: str, active: int) -> None:
        assert api.ok("GET", path, admin) == {"version": active, **rules(*"ab"[:active])}
        listed = api.ok("GET", f"{path}/versions", admin)["versions"]
        assert [(v["version"], v["active"], v["rules"]) for v in listed] == [
            (1, active == 1, 1),
            (2, active == 2, 2),
        ]
        assert {v["author_id"] for v in listed} == {AUTHOR}
        assert [v["created_at"][:10] for v in listed] == ["2026-01-01", "2026-02-01"]

    project_path, domain_path = f"/v1/projects/{project}/policy", "/v1/domains/default/policy"
    check(project_path, 1)
    check(domain_path, 2)
    # Numbering goes on from the last saved version; an old version activates again.
    assert api.ok("PUT", project_path, admin, rules("c"), 200)["version"] == 3
    api.ok("POST", f"{domain_path}/versions/1/activate", admin, None, 200)

    # And back: the rows in the two pairs of tables again.
    with app.app_context():
        database_of(app).session.remove()
        downgrade(revision=BEFORE)
        with database_of(app).engine.connect() as conn:
            projects = conn.execute(
                text("SELECT version FROM policy_version WHERE project_id = :p ORDER BY version"),
                {"p": project},
            ).scalars()
            assert list(projects) == [1, 2, 3]
            assert conn.execute(text("SELECT active_version FROM project_policy")).scalar() == 3
            domains = conn.execute(text("SELECT version, author_id FROM domain_policy_version"))
            assert sorted(tuple(row) for row in domains) == [(1, AUTHOR), (2, AUTHOR)]
            assert conn.execute(text("SELECT active_version FROM domain_policy")).scalar() == 1
        upgrade()
        database_of(app).session.remove()
        database_of(app).engine.dispose()
