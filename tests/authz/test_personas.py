"""Persona-by-action matrix for Latchkey's own API (``latchkey/policy/enforcer.py``).

Each ``Row`` names an action, its request and the status each persona gets;
a persona left out is refused (403 ``action_forbidden``), and a request
without a token is always 401 ``token_missing``. Building the world costs far
more than a check, so one test runs a whole family of rows against one world,
each check a subtest named ``<persona>-<row>`` (``member-create-project``);
rows that change state use per-persona names or a fresh victim (``{new_*}``).

Cells marked ``BUG`` are outcomes the rules give today but a Keystone or
Keycloak administrator would not expect: the check is an xfail while the
request succeeds, and fails once it is refused so that the table gets fixed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.test import TestResponse

from tests.conftest import Api

PASSWORD = "persona-password-1234"  # the password policy wants at least 12 characters

CLOUD = "cloud_admin"  # admin on project `admin`
DOMAIN_ADMIN = "domain_admin"  # admin on domain `default`, domain-scoped token
PROJECT_ADMIN = "project_admin"  # admin on p1, token scoped to p1
MEMBER = "member"  # member on p1
READER = "reader"  # reader on p1
NO_ROLE = "no_role"  # no assignment at all, unscoped token
OTHER_MEMBER = "other_member"  # member on p2, token scoped to p2
HUMANS = (CLOUD, DOMAIN_ADMIN, PROJECT_ADMIN, MEMBER, READER, NO_ROLE, OTHER_MEMBER)
# Application credential tokens of a human persona (issue 13, class 2): a restricted
# one (the default kind) never changes anything, whatever its roles: every write
# row is 403 `application_credential_restricted`, every read row as for its owner;
# an unrestricted one does what its owner does.
CREDENTIALS = {
    "cloud_restricted": (CLOUD, True),
    "cloud_unrestricted": (CLOUD, False),
    "project_admin_restricted": (PROJECT_ADMIN, True),
    "project_admin_unrestricted": (PROJECT_ADMIN, False),
}
PERSONAS = (*HUMANS, *CREDENTIALS)
ANONYMOUS = "anonymous"  # no token at all
RESTRICTED = "application_credential_restricted"

BUG = -1  # see the module docstring and Row.why

# The admin project and the cloud admin account live in domain `default`; the rows
# about them check that its domain admin cannot reach cloud admin through them.


@dataclass(frozen=True)
class Row:
    name: str
    request: str  # "METHOD /path/{placeholder}"
    body: dict[str, Any] | None = None
    expect: dict[str, int] = field(default_factory=dict)  # persona -> status; absent = 403
    why: str = ""  # for BUG cells
    reads_only: bool = False  # a POST that changes nothing (validating, simulating)

    @property
    def changes(self) -> bool:
        return self.method != "GET" and not self.reads_only

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.request.split(" ", 1)[1]

    def expected(self, persona: str) -> int:
        if persona == ANONYMOUS:
            return 401
        if persona in CREDENTIALS:
            owner, restricted = CREDENTIALS[persona]
            return 403 if restricted and self.changes else self.expected(owner)
        return self.expect.get(persona, 403)

    def expected_code(self, persona: str) -> str | None:
        """The problem code of a refusal (403) or missing token (401)."""
        if persona == ANONYMOUS:
            return "token_missing"
        if persona in CREDENTIALS and CREDENTIALS[persona][1] and self.changes:
            return RESTRICTED
        return "action_forbidden"


def row(
    name: str,
    request: str,
    body: dict[str, Any] | None = None,
    *,
    why: str = "",
    reads_only: bool = False,
    **expect: int,
) -> Row:
    unknown = set(expect) - set(HUMANS)
    assert not unknown, f"{name}: unknown personas {unknown}"
    assert why or BUG not in expect.values(), f"{name}: say why a BUG cell is wrong"
    return Row(name, request, body, expect, why, reads_only)


# Placeholders: ids from the world; {self} is the caller's own user id; {persona}
# makes names unique per persona; {new_*} creates a fresh resource for one check.
MATRIX: dict[str, list[Row]] = {
    "domains": [
        row("list-domains", "GET /v1/domains", cloud_admin=200),
        row("create-domain", "POST /v1/domains", {"name": "{persona}-domain"}, cloud_admin=201),
        # Keystone also lets a project-scoped token read its project's domain.
        # Anyone with a role on a project of the domain reads the domain itself, as in
        # Keystone (issue 14: a project token reads its project's domain).
        row(
            "get-own-domain",
            "GET /v1/domains/default",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
            other_member=200,
        ),
        row("get-other-domain", "GET /v1/domains/{other}", cloud_admin=200),
        row(
            "update-own-domain", "PATCH /v1/domains/default", {"description": "x"}, cloud_admin=200
        ),
        row(
            "update-other-domain",
            "PATCH /v1/domains/{other}",
            {"description": "x"},
            cloud_admin=200,
        ),
        row("delete-domain", "DELETE /v1/domains/{new_disabled_domain}", cloud_admin=204),
    ],
    "projects": [
        row(
            "create-project",
            "POST /v1/projects",
            {"name": "{persona}-project"},
            cloud_admin=201,
            domain_admin=201,
        ),
        row(
            "create-project-in-other-domain",
            "POST /v1/projects",
            {"name": "{persona}-project", "domain_id": "{other}"},
            cloud_admin=201,
        ),
        row("list-projects", "GET /v1/projects", cloud_admin=200, domain_admin=200),
        row("list-projects-of-other-domain", "GET /v1/projects?domain_id={other}", cloud_admin=200),
        row(
            "get-project",
            "GET /v1/projects/{p1}",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
        ),
        row("get-project-of-other-domain", "GET /v1/projects/{o1}", cloud_admin=200),
        row(
            "update-project",
            "PATCH /v1/projects/{p1}",
            {"description": "x"},
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "update-project-of-other-domain",
            "PATCH /v1/projects/{o1}",
            {"description": "x"},
            cloud_admin=200,
        ),
        row(
            "update-admin-project",
            "PATCH /v1/projects/{admin_project}",
            {"description": "x"},  # `enabled: false` would lock every cloud admin out
            cloud_admin=200,
        ),
        row(
            "delete-project",
            "DELETE /v1/projects/{new_project}",
            cloud_admin=204,
            domain_admin=204,
        ),
        row(
            "delete-project-of-other-domain",
            "DELETE /v1/projects/{new_other_project}",
            cloud_admin=204,
        ),
    ],
    "users": [
        row(
            "create-user",
            "POST /v1/users",
            {"name": "{persona}-user", "password": PASSWORD},
            cloud_admin=201,
            domain_admin=201,
        ),
        row(
            "create-user-in-other-domain",
            "POST /v1/users",
            {"name": "{persona}-user", "password": PASSWORD, "domain_id": "{other}"},
            cloud_admin=201,
        ),
        row(
            "create-application-account-owned-by-other-domain-project",
            "POST /v1/users",
            {"name": "{persona}-app", "kind": "application", "owner_project_id": "{o1}"},
            # An application account lives in its owner project's domain, for everyone;
            # reaching for a project of another domain needs cloud scope (and then 422).
            cloud_admin=422,
        ),
        row("list-users", "GET /v1/users", cloud_admin=200, domain_admin=200),
        row("list-users-of-other-domain", "GET /v1/users?domain_id={other}", cloud_admin=200),
        row(
            "get-self",
            "GET /v1/users/{self}",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
            no_role=200,
            other_member=200,
        ),
        row("get-other-user", "GET /v1/users/{bystander}", cloud_admin=200, domain_admin=200),
        row("get-user-of-other-domain", "GET /v1/users/{stranger}", cloud_admin=200),
        row(
            "update-self",
            "PATCH /v1/users/{self}",
            {"description": "x"},
            cloud_admin=200,
            domain_admin=200,
        ),
        row(
            "update-other-user",
            "PATCH /v1/users/{bystander}",
            {"description": "x"},
            cloud_admin=200,
            domain_admin=200,
        ),
        row(
            "update-user-of-other-domain",
            "PATCH /v1/users/{stranger}",
            {"description": "x"},
            cloud_admin=200,
        ),
        row(
            "update-cloud-admin-user",
            "PATCH /v1/users/{admin_user}",
            {"description": "x"},  # the same permission sets `password`: account takeover
            cloud_admin=200,
        ),
        row("delete-user", "DELETE /v1/users/{new_user}", cloud_admin=204, domain_admin=204),
        row(
            "delete-second-cloud-admin-user",
            "DELETE /v1/users/{new_cloud_admin}",
            cloud_admin=204,
        ),
    ],
    "groups": [
        row(
            "create-group",
            "POST /v1/groups",
            {"name": "{persona}-group"},
            cloud_admin=201,
            domain_admin=201,
        ),
        row(
            "create-group-in-other-domain",
            "POST /v1/groups",
            {"name": "{persona}-group", "domain_id": "{other}"},
            cloud_admin=201,
        ),
        row("list-groups", "GET /v1/groups", cloud_admin=200, domain_admin=200),
        row(
            "add-group-member",
            "PUT /v1/groups/{group}/users/{bystander}",
            cloud_admin=204,
            domain_admin=204,
        ),
        row(
            "add-member-to-group-of-other-domain",
            "PUT /v1/groups/{other_group}/users/{stranger}",
            cloud_admin=204,
        ),
        # Like Keystone: reaching into a second domain needs cloud scope.
        row(
            "add-user-of-other-domain-to-own-group",
            "PUT /v1/groups/{group}/users/{stranger}",
            cloud_admin=204,
        ),
        row(
            "list-group-members",
            "GET /v1/groups/{group}/users",
            cloud_admin=200,
            domain_admin=200,
        ),
        row(
            "update-group",
            "PATCH /v1/groups/{group}",
            {"description": "x"},
            cloud_admin=200,
            domain_admin=200,
        ),
        row(
            "remove-group-member",
            "DELETE /v1/groups/{group}/users/{new_group_member}",
            cloud_admin=204,
            domain_admin=204,
        ),
        row("delete-group", "DELETE /v1/groups/{new_group}", cloud_admin=204, domain_admin=204),
    ],
    "roles-and-assignments": [
        row(
            "list-roles",
            "GET /v1/roles",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
            other_member=200,
        ),
        row("create-role", "POST /v1/roles", {"name": "{persona}-role"}, cloud_admin=201),
        row("delete-role", "DELETE /v1/roles/{new_role}", cloud_admin=204),
        row("imply-role", "PUT /v1/roles/{new_role}/implies/reader", cloud_admin=204),
        row("unimply-role", "DELETE /v1/roles/{new_implying_role}/implies/reader", cloud_admin=204),
        row(
            "grant-member-on-project-to-group",
            "PUT /v1/projects/{p1}/groups/{group}/roles/member",
            cloud_admin=204,
            domain_admin=204,
            project_admin=204,
        ),
        row(
            "revoke-reader-on-domain",
            "DELETE /v1/domains/default/users/{new_domain_reader}/roles/reader",
            cloud_admin=204,
            domain_admin=204,
        ),
        row(
            "grant-member-on-project",
            "PUT /v1/projects/{p1}/users/{bystander}/roles/member",
            cloud_admin=204,
            domain_admin=204,
            project_admin=204,
        ),
        # Keystone's default policy keeps grants to system and domain admins.
        row(
            "grant-admin-on-project",
            "PUT /v1/projects/{p1}/users/{bystander}/roles/admin",
            cloud_admin=204,
            domain_admin=204,
            project_admin=204,
        ),
        # `admin` does not imply `service`: only its holders (or cloud admins) may grant it.
        row(
            "grant-service-on-project",
            "PUT /v1/projects/{p1}/users/{bystander}/roles/service",
            cloud_admin=204,
        ),
        # Like Keystone's domain-admin rule: the user must be in the project's domain.
        row(
            "grant-member-on-project-to-user-of-other-domain",
            "PUT /v1/projects/{p1}/users/{stranger}/roles/member",
            cloud_admin=204,
        ),
        row(
            "grant-member-on-sibling-project",
            "PUT /v1/projects/{p2}/users/{bystander}/roles/member",
            cloud_admin=204,
            domain_admin=204,
        ),
        row(
            "grant-member-on-project-of-other-domain",
            "PUT /v1/projects/{o1}/users/{stranger}/roles/member",
            cloud_admin=204,
        ),
        row(
            "grant-reader-on-domain",
            "PUT /v1/domains/default/users/{bystander}/roles/reader",
            cloud_admin=204,
            domain_admin=204,
        ),
        row(
            "grant-admin-on-admin-project",
            "PUT /v1/projects/{admin_project}/users/{bystander}/roles/admin",
            cloud_admin=204,
        ),
        row(
            "revoke-member-on-project",
            "DELETE /v1/projects/{p1}/users/{new_p1_member}/roles/member",
            cloud_admin=204,
            domain_admin=204,
            project_admin=204,
        ),
        row(
            "revoke-admin-on-admin-project",
            "DELETE /v1/projects/{admin_project}/users/{new_cloud_admin}/roles/admin",
            cloud_admin=204,
        ),
        row(
            "list-role-assignments-of-project",
            "GET /v1/role-assignments?project_id={p1}",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "list-own-role-assignments",
            "GET /v1/role-assignments?user_id={self}",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
            no_role=200,
            other_member=200,
        ),
        row("list-all-role-assignments", "GET /v1/role-assignments", cloud_admin=200),
    ],
    "catalog": [
        row(
            "list-services",
            "GET /v1/services",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
            other_member=200,
        ),
        row("create-service", "POST /v1/services", {"type": "{slug}"}, cloud_admin=201),
        row("update-service", "PUT /v1/services/{service}", {"type": "shop"}, cloud_admin=200),
        row("delete-service", "DELETE /v1/services/{new_service}", cloud_admin=204),
    ],
    # Tenant and domain policies. Validating and simulating change nothing.
    "policies": [
        row(
            "get-project-policy",
            "GET /v1/projects/{p1}/policy",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
        ),
        row(
            "validate-project-policy",
            "POST /v1/projects/{p1}/policy/validate",
            {"rules": []},
            reads_only=True,
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "simulate-project-policy",
            "POST /v1/projects/{p1}/policy/simulate",
            {"rules": []},
            reads_only=True,
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "put-project-policy",
            "PUT /v1/projects/{p1}/policy",
            {"rules": [{"id": "all", "effect": "allow", "actions": ["*"]}]},
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "activate-project-policy",
            "POST /v1/projects/{p1}/policy/versions/1/activate",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        row(
            "list-project-policy-versions",
            "GET /v1/projects/{p1}/policy/versions",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
            member=200,
            reader=200,
        ),
        # Domain `default` holds the admin project: its rules are the cloud's alone.
        row("get-domain-policy", "GET /v1/domains/default/policy", cloud_admin=200),
        row(
            "validate-domain-policy",
            "POST /v1/domains/default/policy/validate",
            {"rules": []},
            reads_only=True,
            cloud_admin=200,
        ),
        row("put-domain-policy", "PUT /v1/domains/default/policy", {"rules": []}, cloud_admin=200),
        row(
            "activate-domain-policy",
            "POST /v1/domains/default/policy/versions/1/activate",
            cloud_admin=200,
        ),
    ],
    "audit-and-revocations": [
        row("list-audit-events", "GET /v1/audit/events", cloud_admin=200),
        row(
            "list-audit-events-of-project",
            "GET /v1/audit/events?project_id={p1}",
            cloud_admin=200,
            domain_admin=200,
            project_admin=200,
        ),
        # Holders of `service` on any project may too (relying services); no persona does.
        row("list-revocations", "GET /v1/revocations", cloud_admin=200),
    ],
}


class World:
    """Domains, projects, users and one token per persona, built through the API."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.admin = api.admin_token()
        self._serial = itertools.count()
        self.ids: dict[str, str] = {
            "admin_project": self._id_of("/v1/projects?name=admin", "projects"),
            "admin_user": self._id_of("/v1/users?name=admin", "users"),
            "other": self._post("/v1/domains", {"name": "other"}),
            "p1": self._post("/v1/projects", {"name": "p1"}),
            "p2": self._post("/v1/projects", {"name": "p2"}),
            "group": self._post("/v1/groups", {"name": "staff"}),
            "bystander": self._user("bystander"),
            "service": self._post("/v1/services", {"type": "shop"}),
        }
        other = self.ids["other"]
        self.ids["o1"] = self._post("/v1/projects", {"name": "o1", "domain_id": other})
        self.ids["other_group"] = self._post("/v1/groups", {"name": "staff", "domain_id": other})
        self.ids["stranger"] = self._user("stranger", domain_id=other)
        self.user_ids = {CLOUD: self.ids["admin_user"]}
        self.tokens = {CLOUD: self.admin}
        self._persona(DOMAIN_ADMIN, "/v1/domains/default", "admin", domain_scope="default")
        self._persona(PROJECT_ADMIN, "/v1/projects/{p1}", "admin", project="p1")
        self._persona(MEMBER, "/v1/projects/{p1}", "member", project="p1")
        self._persona(READER, "/v1/projects/{p1}", "reader", project="p1")
        self._persona(NO_ROLE, None, None)
        self._persona(OTHER_MEMBER, "/v1/projects/{p2}", "member", project="p2")
        for persona, (owner, restricted) in CREDENTIALS.items():
            self._credential_persona(persona, owner, restricted)

    # -- performing a row -------------------------------------------------------------

    def perform(self, persona: str, action: Row) -> TestResponse:
        values = Placeholders(self, persona)
        body = _fill(action.body, values)
        return self.api.call(
            action.method, action.path.format_map(values), self.tokens.get(persona), body
        )

    def fresh(self, kind: str) -> str:
        """A new resource for one destructive check, so checks never share a victim."""
        name = f"fresh-{next(self._serial)}"
        if kind == "disabled_domain":
            return self._post("/v1/domains", {"name": name, "enabled": False})
        if kind == "project":
            return self._post("/v1/projects", {"name": name})
        if kind == "other_project":
            return self._post("/v1/projects", {"name": name, "domain_id": self.ids["other"]})
        if kind == "group":
            return self._post("/v1/groups", {"name": name})
        if kind == "service":
            return self._post("/v1/services", {"type": name})
        if kind in ("role", "implying_role"):
            role = self._post("/v1/roles", {"name": name})
            if kind == "implying_role":
                self.api.ok("PUT", f"/v1/roles/{name}/implies/reader", self.admin)
            return role
        user = self._user(name)
        if kind == "p1_member":
            self._grant(f"/v1/projects/{self.ids['p1']}", user, "member")
        elif kind == "cloud_admin":
            self._grant(f"/v1/projects/{self.ids['admin_project']}", user, "admin")
        elif kind == "group_member":
            self.api.ok("PUT", f"/v1/groups/{self.ids['group']}/users/{user}", self.admin)
        elif kind == "domain_reader":
            self._grant("/v1/domains/default", user, "reader")
        else:
            assert kind == "user", f"no fresh {kind}"
        return user

    # -- building -----------------------------------------------------------------

    def _persona(self, persona: str, scope: str | None, role: str | None, **login: str) -> None:
        user = self._user(persona.replace("_", "-"))
        if scope and role:
            self._grant(scope.format_map(self.ids), user, role)
        self.user_ids[persona] = user
        self.tokens[persona] = self.api.login(persona.replace("_", "-"), PASSWORD, **login)

    def _credential_persona(self, persona: str, owner: str, restricted: bool) -> None:
        """A credential of ``owner`` on the project its token is scoped to, all roles."""
        project = self.ids["admin_project"] if owner == CLOUD else self.ids["p1"]
        body = {"name": persona, "project_id": project, "unrestricted": not restricted}
        path = f"/v1/users/{self.user_ids[owner]}/application-credentials"
        created = self.api.ok("POST", path, self.tokens[owner], body)
        login = {"auth": {"application_credential": {"id": created["id"]}}}
        login["auth"]["application_credential"]["secret"] = created["secret"]
        response = self.api.call("POST", "/v1/auth/tokens", None, login)
        assert response.status_code == 201, response.get_json()
        self.user_ids[persona] = self.user_ids[owner]
        self.tokens[persona] = response.get_json()["token"]

    def _user(self, name: str, domain_id: str = "default") -> str:
        return self._post("/v1/users", {"name": name, "password": PASSWORD, "domain_id": domain_id})

    def _grant(self, scope_path: str, user: str, role: str) -> None:
        self.api.ok("PUT", f"{scope_path}/users/{user}/roles/{role}", self.admin)

    def _post(self, path: str, body: dict[str, Any]) -> str:
        return str(self.api.ok("POST", path, self.admin, body)["id"])

    def _id_of(self, path: str, key: str) -> str:
        (item,) = self.api.ok("GET", path, self.admin)[key]
        return str(item["id"])


class Placeholders(dict[str, str]):
    """Fills a row's templates for one persona; ``{new_*}`` builds a fresh resource."""

    def __init__(self, world: World, persona: str) -> None:
        super().__init__(world.ids, persona=persona, slug=persona.replace("_", "-"))
        self._world = world
        # Without a token there is no "self": ask about someone else.
        self["self"] = world.user_ids.get(persona, world.ids["bystander"])

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


@pytest.fixture
def world(api: Api) -> World:
    return World(api)


@pytest.mark.parametrize("family", list(MATRIX))
def test_persona_matrix(world: World, family: str, subtests: pytest.Subtests) -> None:
    """Every row of one family, for every persona and without a token."""
    for action in MATRIX[family]:
        for persona in (*PERSONAS, ANONYMOUS):
            label = f"{persona}-{action.name}"
            with subtests.test(msg=label):
                response = world.perform(persona, action)
                expected = action.expected(persona)
                if expected == BUG:
                    expect_refusal_once_fixed(response, label, action.why)
                else:
                    check(response, expected, label, action.expected_code(persona))


def expect_refusal_once_fixed(response: TestResponse, label: str, why: str) -> None:
    """A strict xfail: allowed today is expected; refused means the table needs 403 here."""
    if response.status_code < 300:
        pytest.xfail(f"SECURITY: {why}")
    check(response, 403, label)
    pytest.fail(f"{label} is refused now: write 403 instead of BUG in its row")
