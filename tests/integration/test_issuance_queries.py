"""What an application-credential login costs the database, and that the one-query
effective-roles lookup still says what the three queries it replaced said.

On SQLite and PostgreSQL: a login is one query for the credential (with its secrets,
owner, project and their domains, and the roles the owner holds there) and one commit
with the audit event; a first use in the minute notes ``last_used_at``, written after the
response (two more statements, on their own connection, once the response is closed).
Role implications are followed transitively, through groups, and take effect on the
next login; a cycle written behind the API's back does not hang a login.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from latchkey.identity.models import RoleImplication
from tests.conftest import Api, database_of
from tests.integration.test_app_credentials import (
    claims_of,
    create_credential,
    credential_login,
    credential_token,
    person,
    project,
)


@dataclass
class Statements:
    executed: list[str] = field(default_factory=list)
    commits: int = 0

    def reset(self) -> None:
        self.executed.clear()
        self.commits = 0


@pytest.fixture
def statements(app: Flask) -> Iterator[Statements]:
    seen = Statements()
    with app.app_context():
        engine = database_of(app).engine

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.executed.append(" ".join(statement.split())[:100])

    def committed(conn: Any) -> None:
        seen.commits += 1

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", committed)
    yield seen
    event.remove(engine, "before_cursor_execute", executed)
    event.remove(engine, "commit", committed)


def test_a_credential_login_is_two_statements_and_one_commit(
    api: Api, admin_token: str, statements: Statements
) -> None:
    web = project(api, admin_token, "web")
    alice = person(api, admin_token, "alice", web, "member")
    credential = create_credential(api, alice.token, alice.id, web["id"])

    statements.reset()
    first = credential_token(api, credential)  # a first use: last_used_at noted
    assert len(statements.executed) == 2, statements.executed
    assert statements.commits == 1
    statements.reset()
    again = credential_token(api, credential)
    assert len(statements.executed) == 2, statements.executed
    assert statements.commits == 1
    for token in (first, again):
        assert claims_of(token)["roles"] == ["member", "reader"]
    # Shown at once: reading the credential writes what this worker noted first.
    shown = api.ok(
        "GET", f"/v1/users/{alice.id}/application-credentials/{credential['id']}", alice.token
    )
    assert shown["last_used_at"] is not None and shown["secrets"][0]["last_used_at"] is not None


def test_effective_roles_follow_implications_and_groups_at_once(
    app: Flask, api: Api, admin_token: str
) -> None:
    web = project(api, admin_token, "web")
    for name in ("deployer", "builder", "viewer", "auditor"):
        api.ok("POST", "/v1/roles", admin_token, {"name": name})
    api.ok("PUT", "/v1/roles/deployer/implies/builder", admin_token)
    api.ok("PUT", "/v1/roles/builder/implies/viewer", admin_token)
    alice = person(api, admin_token, "alice", web, "member", "deployer")
    group = api.ok("POST", "/v1/groups", admin_token, {"name": "audit"})
    api.ok("PUT", f"/v1/groups/{group['id']}/users/{alice.id}", admin_token)
    api.ok("PUT", f"/v1/projects/{web['id']}/groups/{group['id']}/roles/auditor", admin_token)
    credential = create_credential(api, alice.token, alice.id, web["id"])
    everything = ["auditor", "builder", "deployer", "member", "reader", "viewer"]
    assert credential["roles"] == everything
    assert claims_of(credential_token(api, credential))["roles"] == everything

    # Taking an implication away shows in the very next login (no cache to go stale).
    api.ok("DELETE", "/v1/roles/builder/implies/viewer", admin_token)
    roles = claims_of(credential_token(api, credential))["roles"]
    assert roles == ["auditor", "builder", "deployer", "member", "reader"]
    # And out of the group, out of its role.
    api.ok("DELETE", f"/v1/groups/{group['id']}/users/{alice.id}", admin_token)
    assert "auditor" not in claims_of(credential_token(api, credential))["roles"]

    # A cycle written behind the API's back (the API refuses them) does not hang a login.
    with app.app_context():
        ids = {r["name"]: r["id"] for r in api.ok("GET", "/v1/roles", admin_token)["roles"]}
        database_of(app).session.add(
            RoleImplication(prior_role_id=ids["builder"], implied_role_id=ids["deployer"])
        )
        database_of(app).session.commit()
        database_of(app).session.remove()
    response = credential_login(api, credential["secret"], credential_id=credential["id"])
    assert response.status_code == 201, response.get_json()
    assert claims_of(response.get_json()["token"])["roles"] == [
        "builder",
        "deployer",
        "member",
        "reader",
    ]


def test_last_used_at_is_written_once_the_response_is_closed(
    app: Flask, api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latchkey.credentials import service as credentials_module
    from latchkey.credentials.models import ApplicationCredential

    web = project(api, admin_token, "web")
    alice = person(api, admin_token, "alice", web, "member")
    credential = create_credential(api, alice.token, alice.id, web["id"])
    monkeypatch.setattr(credentials_module, "FLUSH_SECONDS", 0.0)

    def last_used() -> Any:
        with app.app_context():
            row = database_of(app).session.get(ApplicationCredential, credential["id"])
            return row.last_used_at if row else None

    response = credential_login(api, credential["secret"], credential_id=credential["id"])
    assert response.status_code == 201
    assert last_used() is None  # noted, not yet written: the answer goes out first
    response.close()  # what the WSGI server does once the answer is out
    assert last_used() is not None


def test_listing_credentials_reads_their_secrets_in_one_query(
    api: Api, admin_token: str, statements: Statements
) -> None:
    """The secrets of every listed credential come in one query, not one per credential."""
    web = project(api, admin_token, "web")
    alice = person(api, admin_token, "alice", web, "member")
    path = f"/v1/users/{alice.id}/application-credentials"

    def secret_queries() -> int:
        statements.reset()
        listed = api.ok("GET", path, alice.token)["application_credentials"]
        assert all(len(c["secrets"]) == 1 for c in listed)
        # Statements are kept to their first 100 characters: the selected columns name the table.
        return sum(
            s.startswith("SELECT application_credential_secret.") for s in statements.executed
        )

    create_credential(api, alice.token, alice.id, web["id"], name="first")
    assert secret_queries() == 1
    for name in ("second", "third", "fourth"):
        create_credential(api, alice.token, alice.id, web["id"], name=name)
    assert secret_queries() == 1
