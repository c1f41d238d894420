"""Every worked example of docs/policy.md, run against the real API.

The documents, responses, boundaries and decision tables are read from the
guide itself (the blocks marked ``<!-- example: NAME -->``, ``<!-- response:
NAME -->``, ``<!-- boundary: NAME -->``, ``<!-- claims: NAME -->`` and
``<!-- plans: NAME -->``), so the guide and this test cannot drift apart. A
``$NAME`` in a block is filled in as ``envsubst`` would (``$CI_BOT_ID``,
``$AUDITORS_GROUP_ID``, ``$WEB``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from latchkey.frontdoors.cli.main import main
from latchkey.policy.engine import DEFAULT_BOUNDARY, READ_VERBS, WRITE_VERBS
from latchkey.policy.plan import to_sql
from tests.conftest import Api

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "policy.md"
TEXT = GUIDE.read_text()
FENCED = re.compile(r"<!-- (example|response|boundary): ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)
CLAIMS = re.compile(r"<!-- claims: ([\w-]+) -->\n((?:\|.*\n)+)")
PLANS = re.compile(r"<!-- plans: ([\w-]+) -->\n((?:\|.*\n)+)")
PLACEHOLDER = re.compile(r"\$([A-Z][A-Z_]*)")
PASSWORD = "a-long-password-1"


def fenced(kind: str) -> dict[str, str]:
    return {name: body for k, name, _lang, body in FENCED.findall(TEXT) if k == kind}


@dataclass(frozen=True)
class Claim:
    caller: str
    action: str
    resource_type: str
    attributes: dict[str, Any]
    project: str
    allowed: bool
    decided_by: str
    rule: str | None

    def __str__(self) -> str:
        return f"{self.caller} {self.action} {self.attributes} in {self.project}"


def claims() -> dict[str, list[Claim]]:
    tables: dict[str, list[Claim]] = {}
    for name, table in CLAIMS.findall(TEXT):
        rows = [line for line in table.splitlines() if line.strip()][2:]  # header, rule
        parsed = []
        for row in rows:
            caller, action, resource, allowed, decided_by, rule = (
                cell.strip() for cell in row.strip().strip("|").split("|")
            )
            quoted = re.findall(r"`([^`]*)`", resource)
            parsed.append(
                Claim(
                    caller=caller,
                    action=action.strip("`"),
                    resource_type=quoted[0],
                    attributes=json.loads(quoted[1]),
                    project=quoted[2] if len(quoted) > 2 else "web",
                    allowed={"true": True, "false": False}[allowed],
                    decided_by=decided_by,
                    rule=None if rule == "—" else rule,
                )
            )
        tables[name] = parsed
    return tables


def plans() -> list[tuple[str, str, str]]:
    """(caller, action, kind) rows of the per-team plans table."""
    (table,) = [t for name, t in PLANS.findall(TEXT) if name == "per-team"]
    found = []
    for row in [line for line in table.splitlines() if line.strip()][2:]:
        caller, action, kind = (
            cell.strip().strip("`") for cell in row.strip().strip("|").split("|")
        )
        found.append((caller, action, kind))
    return found


EXAMPLES = fenced("example")
RESPONSES = fenced("response")
BOUNDARIES = fenced("boundary")
CLAIMS_BY_NAME = claims()
# Claims tables decided under a tenant document of the same name.
POLICY_CLAIMS = sorted(name for name in CLAIMS_BY_NAME if name in EXAMPLES)


@dataclass
class Cast:
    """The guide's cast: projects, principals and their tokens."""

    api: Api
    admin: str
    projects: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    auditors: str = ""

    def values(self) -> dict[str, str]:
        return {
            "CI_BOT_ID": self.users["ci-bot"],
            "AUDITORS_GROUP_ID": self.auditors,
            "WEB": self.projects["web"],
        }

    def fill(self, text: str) -> Any:
        """A JSON block exactly as printed, with `envsubst`'s work done."""
        return json.loads(PLACEHOLDER.sub(lambda m: self.values()[m.group(1)], text))

    def document(self, name: str) -> Any:
        return self.fill(EXAMPLES[name])

    def put(self, name: str, as_: str = "carol") -> dict[str, Any]:
        response = self.api.call(
            "PUT",
            f"/v1/projects/{self.projects['web']}/policy",
            self.tokens[as_],
            self.document(name),
        )
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    def resource(
        self, resource_type: str, attributes: dict[str, Any], project: str = "web"
    ) -> dict[str, Any]:
        return {
            "type": resource_type,
            "project_id": self.projects[project],
            "attributes": attributes,
        }

    def ask(self, caller: str, body: dict[str, Any], path: str = "/v1/authorize") -> Any:
        response = self.api.call("POST", path, self.tokens[caller], body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def check(self, claim: Claim, table: str = "") -> None:
        resource = self.resource(claim.resource_type, claim.attributes, claim.project)
        got = self.ask(claim.caller, {"action": claim.action, "resource": resource})
        want = {"allowed": claim.allowed, "decided_by": claim.decided_by}
        if claim.rule is not None:
            want["rule"] = claim.rule
        assert got == want, f"claims table {table!r}: {claim}"


def _human(cast: Cast, name: str, attributes: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"name": name, "password": PASSWORD}
    if attributes:
        body["attributes"] = attributes
    user_id = str(cast.api.ok("POST", "/v1/users", cast.admin, body)["id"])
    cast.users[name] = user_id
    return user_id


def _grant(
    cast: Cast, project: str, kind: str, actor_id: str, role: str, token: str | None = None
) -> None:
    cast.api.ok(
        "PUT",
        f"/v1/projects/{cast.projects[project]}/{kind}s/{actor_id}/roles/{role}",
        token or cast.admin,
        status=204,
    )


def _credential_token(cast: Cast, user_id: str, project: str, token: str, **extra: Any) -> str:
    credential = cast.api.ok(
        "POST",
        f"/v1/users/{user_id}/application-credentials",
        token,
        {"name": "cred", "project_id": cast.projects[project], **extra},
    )
    response = cast.api.call(
        "POST",
        "/v1/auth/tokens",
        None,
        {
            "auth": {
                "application_credential": {"id": credential["id"], "secret": credential["secret"]}
            }
        },
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["token"])


def _account(cast: Cast, name: str, project: str, role: str, token: str) -> None:
    """An application account and a credential, made as the guide's curl lines make them."""
    body = {"name": name, "kind": "application", "owner_project_id": cast.projects[project]}
    user_id = str(cast.api.ok("POST", "/v1/users", token, body)["id"])
    cast.users[name] = user_id
    _grant(cast, project, "user", user_id, role, token)
    cast.tokens[name] = _credential_token(cast, user_id, project, token)


@pytest.fixture
def cast(api: Api, admin_token: str) -> Cast:
    cast = Cast(api, admin_token)
    response = api.call(
        "POST", "/v1/services", admin_token, json.loads(EXAMPLES["objects-service"])
    )
    assert response.status_code == 201, response.get_json()
    for project in ("web", "ops", "services"):
        cast.projects[project] = api.ok("POST", "/v1/projects", admin_token, {"name": project})[
            "id"
        ]
    for name, role, team in (
        ("carol", "admin", "blue"),
        ("alice", "member", "blue"),
        ("bob", "member", "red"),
        ("erin", "member", None),
    ):
        _grant(cast, "web", "user", _human(cast, name, {"team": team} if team else None), role)
    cast.auditors = str(api.ok("POST", "/v1/groups", admin_token, {"name": "auditors"})["id"])
    for name in ("dave", "frank"):
        user_id = _human(cast, name)
        api.ok("PUT", f"/v1/groups/{cast.auditors}/users/{user_id}", admin_token, status=204)
    _grant(cast, "web", "group", cast.auditors, "reader")
    _grant(cast, "web", "user", cast.users["frank"], "member")
    for name in ("carol", "alice", "bob", "erin", "dave", "frank"):
        cast.tokens[name] = api.login(name, PASSWORD, project="web")
    cast.tokens["alice-cli"] = _credential_token(
        cast, cast.users["alice"], "web", cast.tokens["alice"], roles=["member"]
    )
    # carol, the project's admin, makes its application accounts; a cloud admin the
    # object store's own account.
    _account(cast, "ci-bot", "web", "member", cast.tokens["carol"])
    _account(cast, "ops-bot", "web", "admin", cast.tokens["carol"])
    _account(cast, "objects", "services", "service", admin_token)
    return cast


# -- the guide itself ------------------------------------------------------------------


def test_the_guide_has_every_example_the_test_expects() -> None:
    assert {"ci-bot", "auditors", "apps-never-delete", "per-team"} <= set(EXAMPLES)
    assert {"objects-service", "empty", "fail-closed", "invalid"} <= set(EXAMPLES)
    assert set(CLAIMS_BY_NAME) == {*POLICY_CLAIMS, "no-policy", "prod-admins-only"}
    assert all(CLAIMS_BY_NAME.values())
    assert set(RESPONSES) == {"ci-bot-explain", "invalid", "plan-alice", "simulate"}
    assert plans()
    for text in EXAMPLES.values():
        json.loads(PLACEHOLDER.sub("an-id", text))


def test_the_quoted_default_boundary_and_verbs_are_the_shipped_ones() -> None:
    assert BOUNDARIES["default"] == DEFAULT_BOUNDARY.read_text()
    verbs = TEXT.split("<!-- verbs -->", 1)[1]
    for constant, values in (("READ_VERBS", READ_VERBS), ("WRITE_VERBS", WRITE_VERBS)):
        line = next(x for x in verbs.splitlines() if x.startswith(f"| `{constant}` |"))
        assert re.findall(r"`(\w+)`", line.split("|")[2]) == list(values)


# -- decisions ------------------------------------------------------------------------


def test_every_decision_table(cast: Cast) -> None:
    """No policy first, then each example put in turn (each is a whole document)."""
    for claim in CLAIMS_BY_NAME["no-policy"]:
        cast.check(claim, "no-policy")
    for version, name in enumerate(POLICY_CLAIMS, start=1):
        assert cast.put(name)["version"] == version
        for claim in CLAIMS_BY_NAME[name]:
            cast.check(claim, name)


def test_ci_bot_explain_actions_batch_and_on_behalf(cast: Cast) -> None:
    cast.put("ci-bot")
    staging = cast.resource("objects:container", {"env": "staging"})
    prod = cast.resource("objects:container", {"env": "prod"})
    read = {"action": "objects:container:read", "resource": staging, "explain": True}
    assert cast.ask("ci-bot", read) == json.loads(RESPONSES["ci-bot-explain"])

    actions = "/v1/authorize/actions"
    assert cast.ask("ci-bot", {"resource": staging}, actions) == {
        "actions": ["objects:container:read"]
    }
    assert cast.ask("ci-bot", {"resource": prod}, actions) == {"actions": []}

    checks = [
        {"action": "objects:container:read", "resource": staging},
        {"action": "objects:container:read", "resource": prod},
    ]
    batch = cast.ask("ci-bot", {"checks": checks}, "/v1/authorize/batch")
    assert [r["allowed"] for r in batch["results"]] == [True, False]

    # The object store asks on the bot's behalf: the decision is about the bot.
    on_behalf = {"subject_token": cast.tokens["ci-bot"], "action": "objects:container:write"}
    got = cast.ask("objects", {**on_behalf, "resource": staging})
    assert got == {"allowed": False, "decided_by": "policy"}
    got = cast.ask(
        "objects", {**on_behalf, "action": "objects:container:read", "resource": staging}
    )
    assert got["allowed"] is True
    # Without the service role: 403; a bad subject token: 401.
    refused = cast.api.call(
        "POST", "/v1/authorize", cast.tokens["alice"], {**on_behalf, "resource": staging}
    )
    assert (refused.status_code, refused.get_json()["code"]) == (403, "action_forbidden")
    bad = {**on_behalf, "subject_token": "not-a-token", "resource": staging}
    refused = cast.api.call("POST", "/v1/authorize", cast.tokens["objects"], bad)
    assert (refused.status_code, refused.get_json()["code"]) == (401, "invalid_token")
    unknown = {"action": "objects:bucket:read", "resource": staging}
    refused = cast.api.call("POST", "/v1/authorize", cast.tokens["ci-bot"], unknown)
    assert (refused.status_code, refused.get_json()["code"]) == (422, "unknown_action")


def test_validation_versions_and_rollback(cast: Cast) -> None:
    # The invalid example is refused as printed, by /validate and by PUT.
    web = cast.projects["web"]
    printed = json.loads(RESPONSES["invalid"])
    for method, path in (
        ("POST", f"/v1/projects/{web}/policy/validate"),
        ("PUT", f"/v1/projects/{web}/policy"),
    ):
        response = cast.api.call(method, path, cast.tokens["carol"], cast.document("invalid"))
        body = response.get_json()
        assert {k: body.get(k) for k in printed} == printed, body
    assert cast.api.ok("GET", f"/v1/projects/{web}/policy", cast.tokens["carol"]) == {
        "version": None,
        "rules": [],
    }

    carol = cast.tokens["carol"]
    valid = cast.api.call(
        "POST", f"/v1/projects/{web}/policy/validate", carol, cast.document("ci-bot")
    )
    assert valid.get_json() == {"valid": True, "rules": 2}
    assert cast.put("ci-bot")["version"] == 1
    assert cast.put("apps-never-delete")["version"] == 2
    write = {
        "action": "objects:container:write",
        "resource": cast.resource("objects:container", {"env": "staging"}),
    }
    assert cast.ask("ci-bot", write)["allowed"] is True  # version 2: roles as usual

    versions = cast.api.ok("GET", f"/v1/projects/{web}/policy/versions", cast.tokens["dave"])
    assert [(v["version"], v["active"], v["rules"]) for v in versions["versions"]] == [
        (1, False, 2),
        (2, True, 2),
    ]
    assert versions["versions"][0]["author_id"] == cast.users["carol"]

    activated = cast.api.ok(
        "POST", f"/v1/projects/{web}/policy/versions/1/activate", carol, status=200
    )
    assert activated["version"] == 1
    assert [r["id"] for r in activated["rules"]] == ["humans-as-before", "ci-reads-staging"]
    assert cast.ask("ci-bot", write) == {"allowed": False, "decided_by": "policy"}
    versions = cast.api.ok("GET", f"/v1/projects/{web}/policy/versions", carol)["versions"]
    assert [v["active"] for v in versions] == [True, False]  # no new version
    # Editing policy needs admin on the project.
    for who in ("alice", "ci-bot"):
        response = cast.api.call(
            "PUT", f"/v1/projects/{web}/policy", cast.tokens[who], cast.document("empty")
        )
        assert response.status_code == 403


def test_the_boundary_example_and_a_broken_boundary(app: Flask, cast: Cast, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    custom = tmp_path / "boundary.polar"
    custom.write_text(BOUNDARIES["prod-admins-only"])
    broken = tmp_path / "broken.polar"
    broken.write_text("boundary(actor, action, resource) if nonsense(;\n")
    try:
        loaded = runner.invoke(main, ["policy", "boundary", "load", str(custom)])
        assert loaded.exit_code == 0, loaded.output
        refused = runner.invoke(main, ["policy", "boundary", "load", str(broken)])
        assert refused.exit_code == 1
        assert "refused, the boundary in force stays" in refused.output
        for claim in CLAIMS_BY_NAME["prod-admins-only"]:
            cast.check(claim, "prod-admins-only")
        # Known limit: a plan consults the boundary for a resource without attributes.
        body = {
            "action": "objects:container:write",
            "resource_type": "objects:container",
            "project_id": cast.projects["web"],
        }
        assert cast.ask("alice", body, "/v1/authorize/plan") == {"kind": "always"}
    finally:
        restored = runner.invoke(main, ["policy", "boundary", "load", str(DEFAULT_BOUNDARY)])
        assert restored.exit_code == 0, restored.output


def test_per_team_plans_their_sql_and_a_team_change(cast: Cast) -> None:
    cast.put("per-team")

    def plan(caller: str, action: str) -> Any:
        body = {
            "action": action,
            "resource_type": "objects:container",
            "project_id": cast.projects["web"],
        }
        return cast.ask(caller, body, "/v1/authorize/plan")

    alice = plan("alice", "objects:container:write")
    assert alice == json.loads(RESPONSES["plan-alice"])
    for caller, action, kind in plans():
        assert plan(caller, action)["kind"] == kind, (caller, action)

    # The service's own query, as the guide's snippet builds it.
    engine = create_engine("sqlite://")
    containers = Table(
        "containers",
        MetaData(),
        Column("name", String),
        Column("team", String, nullable=True),
        Column("env", String, nullable=True),
    )
    containers.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            insert(containers),
            [
                {"name": "a", "team": "blue", "env": "prod"},
                {"name": "b", "team": "red", "env": "prod"},
                {"name": "c", "team": None, "env": "staging"},
            ],
        )
        where = to_sql(alice.get("condition"), {"team": containers.c.team, "env": containers.c.env})
        names = conn.execute(select(containers.c.name).where(where)).scalars().all()
    assert names == ["a"]

    # A changed attribute counts at the next decision (and the next plan).
    def may_write(team: str) -> bool:
        resource = cast.resource("objects:container", {"team": team})
        body = {"action": "objects:container:write", "resource": resource}
        return bool(cast.ask("alice", body)["allowed"])

    assert (may_write("blue"), may_write("red")) == (True, False)
    cast.api.ok(
        "PATCH", f"/v1/users/{cast.users['alice']}", cast.admin, {"attributes": {"team": "red"}}
    )
    assert (may_write("blue"), may_write("red")) == (False, True)
    assert plan("alice", "objects:container:write")["condition"]["value"] == "red"


def test_simulate_as_printed(cast: Cast) -> None:
    cast.put("ci-bot")
    staging = cast.resource("objects:container", {"env": "staging"})
    for action in ("objects:container:read", "objects:container:write"):
        cast.ask("ci-bot", {"action": action, "resource": staging})
    web = cast.projects["web"]
    response = cast.api.call(
        "POST",
        f"/v1/projects/{web}/policy/simulate",
        cast.tokens["carol"],
        cast.document("simulate"),
    )
    assert response.status_code == 200, response.get_json()
    got = response.get_json()
    printed = cast.fill(RESPONSES["simulate"])
    for flip in got["recent"]["flips"] + printed["recent"]["flips"]:
        flip.pop("record_id"), flip.pop("time")
    assert got == printed
    # Nothing was stored: version 1 is still the only one.
    versions = cast.api.ok("GET", f"/v1/projects/{web}/policy/versions", cast.tokens["carol"])
    assert [v["version"] for v in versions["versions"]] == [1]
