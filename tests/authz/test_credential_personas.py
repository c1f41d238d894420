"""Who may manage which application credentials: a persona-by-action table.

Two kinds of owner (``docs/credentials.md``, "Who may manage credentials"):

* a **human** (``owner``, member of p1): only that human may create, list,
  show, rotate or delete their credentials — not their project's or domain's
  admins, not the cloud admin;
* an **application account** (``robot``, owned by p1): its owning project's
  admins, its domain's admins and cloud admins may; a member of p1 and the
  admin of another project may not.

Each ``Row`` names the statuses of the personas allowed; every other persona
gets 403 ``action_forbidden`` and a request without a token 401
``token_missing`` (same conventions as ``test_personas.py``). ``{new_*}``
placeholders build a fresh victim for one destructive check.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.test import TestResponse

from tests.conftest import Api

PASSWORD = "persona-password-1234"

CLOUD = "cloud_admin"  # admin on project `admin`
DOMAIN_ADMIN = "domain_admin"  # admin on domain `default`, domain-scoped token
PROJECT_ADMIN = "project_admin"  # admin on p1, token scoped to p1
MEMBER = "member"  # member on p1
OWNER = "owner"  # the human whose credentials the `human` rows are about; member on p1
UNRELATED = "unrelated"  # member on p2
OTHER_PROJECT_ADMIN = "other_project_admin"  # admin on p2
HUMANS = (CLOUD, DOMAIN_ADMIN, PROJECT_ADMIN, MEMBER, OWNER, UNRELATED, OTHER_PROJECT_ADMIN)
# Application credential tokens of a human persona (issue 13, class 2): a restricted one
# manages no credential and reads only its owner's own; an unrestricted one does what
# its owner does. Their refusals are 403 `application_credential_restricted`.
OWNER_RESTRICTED, OWNER_UNRESTRICTED = "owner_restricted", "owner_unrestricted"
ADMIN_RESTRICTED, ADMIN_UNRESTRICTED = "project_admin_restricted", "project_admin_unrestricted"
CREDENTIALS = {
    OWNER_RESTRICTED: (OWNER, True),
    OWNER_UNRESTRICTED: (OWNER, False),
    ADMIN_RESTRICTED: (PROJECT_ADMIN, True),
    ADMIN_UNRESTRICTED: (PROJECT_ADMIN, False),
}
PERSONAS = (*HUMANS, *CREDENTIALS)
ANONYMOUS = "anonymous"
RESTRICTED = "application_credential_restricted"
# Of the application account owned by p1.
MANAGERS = (CLOUD, DOMAIN_ADMIN, PROJECT_ADMIN, ADMIN_UNRESTRICTED)


@dataclass(frozen=True)
class Row:
    name: str
    request: str  # "METHOD /path/{placeholder}"
    body: dict[str, Any] | None = None
    expect: dict[str, int] = field(default_factory=dict)  # persona -> status; absent = 403

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.request.split(" ", 1)[1]

    def expected(self, persona: str) -> int:
        if persona == ANONYMOUS:
            return 401
        return self.expect.get(persona, 403)

    def expected_code(self, persona: str) -> str:
        if persona == ANONYMOUS:
            return "token_missing"
        if persona in CREDENTIALS and CREDENTIALS[persona][1]:
            return RESTRICTED
        return "action_forbidden"


def rows(owner: str, allowed: tuple[str, ...], readers: tuple[str, ...] = ()) -> list[Row]:
    """The same actions for one owner; ``allowed`` personas succeed, the rest are refused;
    ``readers`` may also list and show (a restricted credential of the owner)."""
    base = f"/v1/users/{{{owner}}}/application-credentials"

    def row(name: str, request: str, status: int, body: dict[str, Any] | None = None) -> Row:
        who = (*allowed, *readers) if request.startswith("GET") else allowed
        return Row(name, request, body, dict.fromkeys(who, status))

    return [
        row("create", f"POST {base}", 201, {"name": "{persona}-cred", "project_id": "{p1}"}),
        row("list", f"GET {base}", 200),
        row("list-by-name", f"GET {base}?name=ci", 200),
        row("show", f"GET {base}/{{{owner}_cred}}", 200),
        # Refused before revealing whether the credential exists.
        row("show-unknown", f"GET {base}/no-such-credential", 404),
        row("rotate", f"POST {base}/{{{owner}_cred}}/secrets", 201, {}),
        row("delete-secret", f"DELETE {base}/{{new_{owner}_rotated}}", 204),
        row("delete", f"DELETE {base}/{{new_{owner}_cred}}", 204),
    ]


# Keyed by the owner's placeholder: `owner` is the human, `robot` the application account.
MATRIX: dict[str, list[Row]] = {
    "owner": rows("owner", (OWNER, OWNER_UNRESTRICTED), readers=(OWNER_RESTRICTED,)),
    "robot": rows("robot", MANAGERS),
}


class World:
    """p1, p2, the human owner, the application account and one token per persona."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.admin = api.admin_token()
        self._serial = itertools.count()
        self.victims: list[tuple[str, str, str]] = []  # (persona, kind, id or path)
        p1 = self._post("/v1/projects", {"name": "p1"})
        p2 = self._post("/v1/projects", {"name": "p2"})
        self.ids: dict[str, str] = {"p1": p1, "p2": p2}
        self.tokens: dict[str, str] = {CLOUD: self.admin}
        self.user_ids: dict[str, str] = {}
        self._persona(DOMAIN_ADMIN, "/v1/domains/default", "admin", domain_scope="default")
        self._persona(PROJECT_ADMIN, f"/v1/projects/{p1}", "admin", project="p1")
        self._persona(MEMBER, f"/v1/projects/{p1}", "member", project="p1")
        self._persona(OWNER, f"/v1/projects/{p1}", "member", project="p1")
        self._persona(UNRELATED, f"/v1/projects/{p2}", "member", project="p2")
        self._persona(OTHER_PROJECT_ADMIN, f"/v1/projects/{p2}", "admin", project="p2")
        for persona, (owner, restricted) in CREDENTIALS.items():
            self._credential_persona(persona, owner, restricted)
        self.ids["owner"] = self.user_ids[OWNER]
        robot = {"name": "robot", "kind": "application", "owner_project_id": p1}
        self.ids["robot"] = self._post("/v1/users", robot)
        self.api.ok("PUT", f"/v1/projects/{p1}/users/{self.ids['robot']}/roles/member", self.admin)
        self.ids["owner_cred"] = self.credential("owner", "ci")["id"]
        self.ids["robot_cred"] = self.credential("robot", "ci")["id"]

    def manager_token(self, owner: str) -> str:
        """Who creates victims: the human himself, or a cloud admin for the robot."""
        return self.tokens[OWNER] if owner == "owner" else self.admin

    def credential(self, owner: str, name: str) -> dict[str, Any]:
        path = f"/v1/users/{self.ids[owner]}/application-credentials"
        body = {"name": name, "project_id": self.ids["p1"]}
        created: dict[str, Any] = self.api.ok("POST", path, self.manager_token(owner), body)
        return created

    def fresh(self, kind: str) -> str:
        owner, _, what = kind.partition("_")
        created = self.credential(owner, f"fresh-{next(self._serial)}")
        if what == "cred":
            return str(created["id"])
        assert what == "rotated", kind
        path = f"/v1/users/{self.ids[owner]}/application-credentials/{created['id']}/secrets"
        self.api.ok("POST", path, self.manager_token(owner), {})
        return f"{created['id']}/secrets/{created['secret_id']}"

    def perform(self, persona: str, row: Row) -> TestResponse:
        values = Placeholders(self, persona)
        body = _fill(row.body, values)
        return self.api.call(
            row.method, row.path.format_map(values), self.tokens.get(persona), body
        )

    def _persona(self, persona: str, scope: str, role: str, **login: str) -> None:
        name = persona.replace("_", "-")
        user = self._post("/v1/users", {"name": name, "password": PASSWORD})
        self.api.ok("PUT", f"{scope}/users/{user}/roles/{role}", self.admin)
        self.user_ids[persona] = user
        self.tokens[persona] = self.api.login(name, PASSWORD, **login)

    def _credential_persona(self, persona: str, owner: str, restricted: bool) -> None:
        body = {"name": persona, "project_id": self.ids["p1"], "unrestricted": not restricted}
        path = f"/v1/users/{self.user_ids[owner]}/application-credentials"
        created = self.api.ok("POST", path, self.tokens[owner], body)
        login = {"auth": {"application_credential": {"id": created["id"]}}}
        login["auth"]["application_credential"]["secret"] = created["secret"]
        response = self.api.call("POST", "/v1/auth/tokens", None, login)
        assert response.status_code == 201, response.get_json()
        self.user_ids[persona] = self.user_ids[owner]
        self.tokens[persona] = response.get_json()["token"]

    def _post(self, path: str, body: dict[str, Any]) -> str:
        return str(self.api.ok("POST", path, self.admin, body)["id"])


class Placeholders(dict[str, str]):
    def __init__(self, world: World, persona: str) -> None:
        super().__init__(world.ids, persona=persona)
        self._world = world

    def __missing__(self, key: str) -> str:
        if not key.startswith("new_"):
            raise KeyError(key)
        self[key] = self._world.fresh(key.removeprefix("new_"))
        return self[key]


def _fill(body: Any, values: Placeholders) -> Any:
    if isinstance(body, str):
        return body.format_map(values)
    if isinstance(body, dict):
        return {key: _fill(value, values) for key, value in body.items()}
    return body


def check(
    response: TestResponse, expected: int, label: str, code: str = "action_forbidden"
) -> None:
    problem = response.get_json(silent=True) or {}
    got = f"{response.status_code} {problem.get('code', '')}".strip()
    assert response.status_code == expected, f"{label}: expected {expected}, got {got}: {problem}"
    if expected in (401, 403):
        assert problem.get("code") == code, f"{label}: {problem}"
    elif expected == 201 and response.request.method == "POST":
        assert str(problem.get("secret", "")).startswith("lkac_"), f"{label}: {problem}"
    elif expected == 200 and "application_credentials" in problem:
        # A listing never shows a secret.
        for credential in problem["application_credentials"]:
            assert "secret" not in credential, f"{label}: {credential}"


@pytest.fixture
def world(api: Api) -> World:
    return World(api)


def test_credential_persona_matrix(world: World, subtests: pytest.Subtests) -> None:
    """Every row for every persona and without a token; then the victims are checked:
    exactly the allowed personas' changes happened, refused ones changed nothing."""
    for owner, table in MATRIX.items():
        for row in table:
            for persona in (*PERSONAS, ANONYMOUS):
                label = f"{persona}-{owner}-{row.name}"
                with subtests.test(msg=label):
                    response = world.perform(persona, row)
                    check(response, row.expected(persona), label, row.expected_code(persona))
    for owner, table in MATRIX.items():
        allowed = set(table[0].expect)
        token = world.manager_token(owner)
        base = f"/v1/users/{world.ids[owner]}/application-credentials"
        names = {c["name"] for c in world.api.ok("GET", base, token)["application_credentials"]}
        for persona in PERSONAS:
            assert (f"{persona}-cred" in names) == (persona in allowed), (owner, persona)
        shown = world.api.ok("GET", f"{base}/{world.ids[owner + '_cred']}", token)
        assert len(shown["secrets"]) == 1 + len(allowed), (owner, shown["secrets"])
        for persona, kind, victim in world.victims:
            if not kind.startswith(owner):
                continue
            credential_id = victim.split("/")[0]
            response = world.api.call("GET", f"{base}/{credential_id}", token)
            if kind.endswith("_cred"):
                expected = 404 if persona in allowed else 200
                assert response.status_code == expected, (persona, kind, response.get_json())
            else:
                remaining = {s["id"] for s in response.get_json()["secrets"]}
                deleted = victim.split("/")[-1] not in remaining
                assert deleted == (persona in allowed), (persona, kind, remaining)
                assert len(remaining) == (1 if persona in allowed else 2), (persona, kind)
