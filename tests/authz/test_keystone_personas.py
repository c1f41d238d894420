"""Persona-by-call matrix for Keystone's /v3 API on Latchkey (issue 14).

Keystone's ``keystone/tests/protection/v3`` is the model: system, domain and
project admin/member/reader, and for Latchkey a restricted application
credential of the project admin, the admin of p1's sibling project p2, and the
admin of domain ``default`` (another domain's admin for every row about d1, and
the one who must not reach the cloud through the admin project that ``default``
holds) (personas and world: ``tests/authz/keystone_world.py``). Each ``Row`` names a
call and the personas allowed; every other persona is refused with the row's
``refused`` status (403, or 404 where Latchkey hides that the object exists),
and a call without a token is 401. Refusals are in Keystone's error shape.

The expected table follows Keystone's default policies where Latchkey agrees.
Where Latchkey deliberately differs (``latchkey/policy/enforcer.py`` RULES and
the "Keystone: ..." entries of docs/decisions.md) the row says so in a
``# LATCHKEY:`` comment. Lists marked ``hides`` must also leave out another
domain's (or user's) object for everyone but the callers who see everything.
Latchkey's rules that apply everywhere:

* the cloud is system scope (or the admin project): system personas are
  Latchkey's cloud readers and admins; ``system_member`` holds `member` and
  `reader`, so it reads as a system reader and writes nothing admin-only;
* a domain admin acts in its own domain only, never on the cloud's operators;
* a project admin acts on its own project only, never across projects;
* a restricted application credential changes nothing: every write is 403
  whatever its owner may do, reads are its owner's (credentials excepted).

One test per family builds one world (on SQLite and PostgreSQL) and checks
each cell as a subtest named ``<persona>-<row>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from werkzeug.test import TestResponse

from tests.authz.keystone_world import (
    ANONYMOUS,
    DEFAULT_DOMAIN_ADMIN,
    DOMAIN_ADMIN,
    DOMAIN_MEMBER,
    DOMAIN_READER,
    OTHER_PROJECT_ADMIN,
    PASSWORD,
    PERSONAS,
    PROJECT_ADMIN,
    PROJECT_MEMBER,
    PROJECT_READER,
    RESTRICTED,
    SYSTEM_ADMIN,
    SYSTEM_MEMBER,
    SYSTEM_READER,
    KeystoneWorld,
)
from tests.authz.test_personas import _fill
from tests.conftest import Api

SYSTEM_READERS = (SYSTEM_ADMIN, SYSTEM_MEMBER, SYSTEM_READER)
DOMAIN_READERS = (DOMAIN_ADMIN, DOMAIN_MEMBER, DOMAIN_READER)
PROJECT_READERS = (PROJECT_ADMIN, PROJECT_MEMBER, PROJECT_READER)
EVERYONE = PERSONAS  # any token with a role
# Lists without a domain filter: each domain's readers get their own domain's objects.
LISTERS = (*SYSTEM_READERS, *DOMAIN_READERS, DEFAULT_DOMAIN_ADMIN)
INHERITED = "/inherited_to_projects"
# Application credentials are made from a project-scoped token: from others, 400.
NOT_PROJECT_SCOPED = dict.fromkeys((*SYSTEM_READERS, *DOMAIN_READERS, DEFAULT_DOMAIN_ADMIN), 400)
SUCCESS = {"GET": 200, "HEAD": 200, "POST": 201, "PUT": 204, "PATCH": 200, "DELETE": 204}


@dataclass(frozen=True)
class Row:
    name: str
    request: str  # "METHOD /path/{placeholder}"
    body: dict[str, Any] | None = None
    expect: dict[str, int] = field(default_factory=dict)  # persona -> status; absent: refused
    refused: int = 403
    hides: str | None = None  # a placeholder whose id an allowed answer must not contain
    sees_all: tuple[str, ...] = SYSTEM_READERS  # ... unless the caller is one of these
    headers: dict[str, str] = field(default_factory=dict)  # sent besides the token

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.request.split(" ", 1)[1]

    @property
    def changes(self) -> bool:
        return self.method not in ("GET", "HEAD")

    def expected(self, persona: str) -> int:
        if persona == ANONYMOUS:
            return 401
        if persona in self.expect:
            return self.expect[persona]
        if persona == RESTRICTED:  # never a write; reads as its owner
            return 403 if self.changes else self.expected(PROJECT_ADMIN)
        return self.refused


def row(
    name: str,
    request: str,
    body: dict[str, Any] | None = None,
    *,
    allow: tuple[str, ...] = (),
    status: int | None = None,
    refused: int = 403,
    hides: str | None = None,
    sees_all: tuple[str, ...] = SYSTEM_READERS,
    headers: dict[str, str] | None = None,
    cells: dict[str, int] | None = None,
    **expect: int,
) -> Row:
    """``allow`` personas get ``status`` (the method's success by default); ``expect``
    names single cells (``restricted_credential=403``), as ``cells`` does."""
    expect = {**(cells or {}), **expect}
    unknown = set(allow) | set(expect)
    assert unknown <= set(PERSONAS), f"{name}: unknown personas {unknown - set(PERSONAS)}"
    method = request.split(" ", 1)[0]
    success = status or SUCCESS[method]
    if method not in ("GET", "HEAD"):  # a restricted credential changes nothing
        allow = tuple(persona for persona in allow if persona != RESTRICTED)
    return Row(
        name,
        request,
        body,
        {**dict.fromkeys(allow, success), **expect},
        refused,
        hides,
        sees_all,
        headers or {},
    )


# Placeholders: ids from the world (d1, d2, p1, p2, o1, group, other_group, bystander,
# stranger, *_role, service, endpoint, region, trust, credential, ec2_access, ...);
# {self} is the caller's user id, {persona} a per-persona name, {<persona>} a persona's
# user id, {new_*} a fresh victim for one check (KeystoneWorld.fresh).
MATRIX: dict[str, list[Row]] = {
    "domains": [
        row("list-domains", "GET /v3/domains", allow=SYSTEM_READERS),
        # Keystone: domain users and users of the domain's projects read it.
        row(
            "get-own-domain",
            "GET /v3/domains/{d1}",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, *PROJECT_READERS, OTHER_PROJECT_ADMIN),
        ),
        row("get-other-domain", "GET /v3/domains/{d2}", allow=SYSTEM_READERS),
        row(
            "create-domain",
            "POST /v3/domains",
            {"domain": {"name": "{persona}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-own-domain",
            "PATCH /v3/domains/{d1}",
            {"domain": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-domain", "DELETE /v3/domains/{new_disabled_domain}", allow=(SYSTEM_ADMIN,)),
    ],
    "projects": [
        row(
            "list-projects",
            "GET /v3/projects",
            allow=LISTERS,
            hides="o1",
        ),
        row(
            "list-projects-of-own-domain",
            "GET /v3/projects?domain_id={d1}",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS),
        ),
        row(
            "list-projects-of-other-domain",
            "GET /v3/projects?domain_id={d2}",
            allow=SYSTEM_READERS,
        ),
        row(
            "get-project",
            "GET /v3/projects/{p1}",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, *PROJECT_READERS),
        ),
        row(
            "get-sibling-project",
            "GET /v3/projects/{p2}",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, OTHER_PROJECT_ADMIN),
        ),
        row("get-project-of-other-domain", "GET /v3/projects/{o1}", allow=SYSTEM_READERS),
        row(
            "create-project",
            "POST /v3/projects",
            {"project": {"name": "{persona}", "domain_id": "{d1}"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        # Domains seen as projects (is_domain): the cloud's, as domains are.
        row(
            "create-project-acting-as-domain",
            "POST /v3/projects",
            {"project": {"name": "{persona}-as-domain", "is_domain": True}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-projects-acting-as-domains",
            "GET /v3/projects?is_domain=true",
            allow=SYSTEM_READERS,
        ),
        row(
            "list-projects-by-name-of-admin-project",
            "GET /v3/projects?name=admin",
            allow=LISTERS,
            hides="admin_project",
            sees_all=(*SYSTEM_READERS, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "update-own-domain-as-project",
            "PATCH /v3/projects/{d1}",
            {"project": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "delete-domain-as-project",
            "DELETE /v3/projects/{new_disabled_domain}",
            allow=(SYSTEM_ADMIN,),
        ),
        # A project below p1 is in p1's domain: its domain admins', not p1's admins'.
        row(
            "create-subproject",
            "POST /v3/projects",
            {"project": {"name": "{persona}-sub", "parent_id": "{p1}"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "create-project-in-other-domain",
            "POST /v3/projects",
            {"project": {"name": "{persona}", "domain_id": "{d2}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        # LATCHKEY: a project's admins update their own project (Keystone's default
        # keeps update_project to system and domain admins).
        row(
            "update-project",
            "PATCH /v3/projects/{p1}",
            {"project": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "update-sibling-project",
            "PATCH /v3/projects/{p2}",
            {"project": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
        ),
        row(
            "update-project-of-other-domain",
            "PATCH /v3/projects/{o1}",
            {"project": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "delete-project",
            "DELETE /v3/projects/{new_project}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "delete-project-of-other-domain",
            "DELETE /v3/projects/{new_other_project}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-project-tags",
            "GET /v3/projects/{p1}/tags",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, *PROJECT_READERS),
        ),
        row(
            "list-sibling-project-tags",
            "GET /v3/projects/{p2}/tags",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, OTHER_PROJECT_ADMIN),
        ),
        # Keystone: project admins manage their project's tags too.
        row(
            "add-project-tag",
            "PUT /v3/projects/{p1}/tags/{persona}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
            status=201,
        ),
        row(
            "add-sibling-project-tag",
            "PUT /v3/projects/{p2}/tags/{persona}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
            status=201,
        ),
        row(
            "check-sibling-project-tag",
            "HEAD /v3/projects/{p2}/tags/missing",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS, OTHER_PROJECT_ADMIN),
            status=404,
        ),
        row(
            "replace-sibling-project-tags",
            "PUT /v3/projects/{p2}/tags",
            {"tags": ["{persona}"]},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
            status=200,
        ),
        row(
            "delete-sibling-project-tags",
            "DELETE /v3/projects/{p2}/tags",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
        ),
        row(
            "add-tag-to-project-of-other-domain",
            "PUT /v3/projects/{o1}/tags/{persona}",
            allow=(SYSTEM_ADMIN,),
            status=201,
        ),
    ],
    "users": [
        row(
            "list-users",
            "GET /v3/users",
            allow=LISTERS,
            hides="stranger",
        ),
        row("list-users-of-other-domain", "GET /v3/users?domain_id={d2}", allow=SYSTEM_READERS),
        row(
            "list-users-by-name-of-cloud-admin",
            "GET /v3/users?name=admin",
            allow=LISTERS,
            hides="admin_user",
            sees_all=(*SYSTEM_READERS, DEFAULT_DOMAIN_ADMIN),
        ),
        row("get-self", "GET /v3/users/{self}", allow=EVERYONE),
        # Keystone: users are read by system and domain readers, not by project users.
        row("get-user", "GET /v3/users/{bystander}", allow=(*SYSTEM_READERS, *DOMAIN_READERS)),
        row("get-user-of-other-domain", "GET /v3/users/{stranger}", allow=SYSTEM_READERS),
        row(
            "create-user",
            "POST /v3/users",
            {"user": {"name": "{persona}-new", "password": PASSWORD, "domain_id": "{d1}"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "create-user-in-other-domain",
            "POST /v3/users",
            {"user": {"name": "{persona}-new", "password": PASSWORD, "domain_id": "{d2}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-user",
            "PATCH /v3/users/{bystander}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        # Keystone: users do not update themselves (their password aside).
        row(
            "update-self",
            "PATCH /v3/users/{self}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "update-user-of-other-domain",
            "PATCH /v3/users/{stranger}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        # LATCHKEY: holders of a system grant are the cloud's operators: a domain admin
        # of their domain may not update them (the same call sets a password).
        row(
            "update-system-reader-user",
            "PATCH /v3/users/{system_reader}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-user", "DELETE /v3/users/{new_user}", allow=(SYSTEM_ADMIN, DOMAIN_ADMIN)),
        # LATCHKEY: as above, a system role holder is the cloud's.
        row(
            "delete-system-reader-user",
            "DELETE /v3/users/{new_system_reader}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "delete-user-of-other-domain",
            "DELETE /v3/users/{new_other_user}",
            allow=(SYSTEM_ADMIN,),
        ),
        row("list-own-groups", "GET /v3/users/{self}/groups", allow=EVERYONE),
        row(
            "list-groups-of-user",
            "GET /v3/users/{bystander}/groups",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS),
        ),
        row(
            "list-groups-of-user-of-other-domain",
            "GET /v3/users/{stranger}/groups",
            allow=SYSTEM_READERS,
        ),
        row("list-own-projects", "GET /v3/users/{self}/projects", allow=EVERYONE),
        row(
            "list-projects-of-user",
            "GET /v3/users/{bystander}/projects",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS),
        ),
        row(
            "list-projects-of-user-of-other-domain",
            "GET /v3/users/{stranger}/projects",
            allow=SYSTEM_READERS,
        ),
        # LATCHKEY: changing another's password with its original is the cloud admin's
        # (Keystone lets anyone who knows the original password, without a token).
        row(
            "change-password-of-other-user",
            "POST /v3/users/{new_user}/password",
            {"user": {"original_password": PASSWORD, "password": "{persona}-new-password-1"}},
            allow=(SYSTEM_ADMIN,),
            status=204,
        ),
        # Last: a password change ends the caller's tokens.
        row(
            "change-own-password",
            "POST /v3/users/{self}/password",
            {"user": {"original_password": PASSWORD, "password": "{persona}-new-password-1"}},
            allow=EVERYONE,
            status=204,
        ),
    ],
    "groups": [
        row(
            "list-groups",
            "GET /v3/groups",
            allow=LISTERS,
            hides="other_group",
        ),
        row("list-groups-of-other-domain", "GET /v3/groups?domain_id={d2}", allow=SYSTEM_READERS),
        row("get-group", "GET /v3/groups/{group}", allow=(*SYSTEM_READERS, *DOMAIN_READERS)),
        row("get-group-of-other-domain", "GET /v3/groups/{other_group}", allow=SYSTEM_READERS),
        row(
            "create-group",
            "POST /v3/groups",
            {"group": {"name": "{persona}", "domain_id": "{d1}"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "create-group-in-other-domain",
            "POST /v3/groups",
            {"group": {"name": "{persona}", "domain_id": "{d2}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-group",
            "PATCH /v3/groups/{group}",
            {"group": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "update-group-of-other-domain",
            "PATCH /v3/groups/{other_group}",
            {"group": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-group", "DELETE /v3/groups/{new_group}", allow=(SYSTEM_ADMIN, DOMAIN_ADMIN)),
        row(
            "delete-group-of-other-domain",
            "DELETE /v3/groups/{new_other_group}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-group-members",
            "GET /v3/groups/{group}/users",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS),
        ),
        row(
            "list-group-members-of-other-domain",
            "GET /v3/groups/{other_group}/users",
            allow=SYSTEM_READERS,
        ),
        row(
            "check-group-member-of-other-domain",
            "HEAD /v3/groups/{other_group}/users/{stranger}",
            allow=SYSTEM_READERS,
            status=204,
        ),
        row(
            "check-group-member",
            "GET /v3/groups/{group}/users/{bystander}",
            allow=(*SYSTEM_READERS, *DOMAIN_READERS),
            status=204,
        ),
        row(
            "add-group-member",
            "PUT /v3/groups/{group}/users/{new_user}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        # Reaching into a second domain needs the cloud (Keystone's domain-admin rule).
        row(
            "add-user-of-other-domain-to-group",
            "PUT /v3/groups/{group}/users/{new_other_user}",
            allow=(SYSTEM_ADMIN,),
        ),
        # LATCHKEY: a group holding a system role is the cloud's: joining it makes a
        # cloud operator (Keystone's domain admins manage every group of their domain).
        row(
            "add-member-to-group-with-system-role",
            "PUT /v3/groups/{new_system_group}/users/{new_user}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "remove-member-from-group-with-system-role",
            "DELETE /v3/groups/{new_system_group}/users/{new_system_group_member}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-member-of-group-with-system-role",
            "PATCH /v3/users/{new_system_group_member}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "delete-group-with-system-role",
            "DELETE /v3/groups/{new_system_group}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "remove-group-member",
            "DELETE /v3/groups/{group}/users/{new_group_member}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
    ],
    "roles": [
        # LATCHKEY: any token holding a role reads roles and their inferences (every
        # token names its roles already); Keystone keeps role reads to readers of the
        # system (and of a domain, for domain roles).
        row("list-roles", "GET /v3/roles", allow=EVERYONE),
        row("get-role", "GET /v3/roles/{member_role}", allow=EVERYONE),
        row("list-implied-roles", "GET /v3/roles/{admin_role}/implies", allow=EVERYONE),
        row("list-role-inferences", "GET /v3/role_inferences", allow=EVERYONE),
        row("list-domain-roles", "GET /v3/roles?domain_id={d1}", allow=EVERYONE),
        row(
            "create-role", "POST /v3/roles", {"role": {"name": "{persona}"}}, allow=(SYSTEM_ADMIN,)
        ),
        row(
            "create-domain-role",
            "POST /v3/roles",
            {"role": {"name": "{persona}-d1", "domain_id": "{d1}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-role",
            "PATCH /v3/roles/{new_role}",
            {"role": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-role", "DELETE /v3/roles/{new_role}", allow=(SYSTEM_ADMIN,)),
        row(
            "imply-role",
            "PUT /v3/roles/{new_role}/implies/{reader_role}",
            allow=(SYSTEM_ADMIN,),
            status=201,
        ),
        row(
            "delete-implied-role",
            "DELETE /v3/roles/{new_implying_role}/implies/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
    ],
    "grants": [
        # LATCHKEY: a project's admins grant roles they hold on their own project
        # (no escalation); Keystone's default keeps grants to system and domain admins.
        row(
            "grant-member-on-project",
            "PUT /v3/projects/{p1}/users/{new_user}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "grant-admin-on-project",
            "PUT /v3/projects/{p1}/users/{new_user}/roles/{admin_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        # LATCHKEY: no escalation: `service` is granted by its holders or the cloud.
        row(
            "grant-service-on-project",
            "PUT /v3/projects/{p1}/users/{new_user}/roles/{service_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-member-on-project-to-group",
            "PUT /v3/projects/{p1}/groups/{new_group}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "grant-member-on-project-to-group-of-other-domain",
            "PUT /v3/projects/{p1}/groups/{new_other_group}/roles/{member_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        # LATCHKEY: a domain-specific role is granted by cloud admins only (no token
        # holds it, so the no-escalation rule leaves it to them); Keystone lets a domain
        # admin grant its domain's roles.
        row(
            "grant-domain-role-on-project",
            "PUT /v3/projects/{p1}/users/{new_user}/roles/{new_domain_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        # Granting a cloud operator a project role gains its granter nothing.
        row(
            "grant-member-on-project-to-system-reader",
            "PUT /v3/projects/{p1}/users/{new_system_reader}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "grant-member-on-sibling-project",
            "PUT /v3/projects/{p2}/users/{new_user}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
        ),
        row(
            "grant-member-on-project-to-user-of-other-domain",
            "PUT /v3/projects/{p1}/users/{new_other_user}/roles/{member_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-member-on-project-of-other-domain",
            "PUT /v3/projects/{o1}/users/{new_other_user}/roles/{member_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-reader-on-domain",
            "PUT /v3/domains/{d1}/users/{new_user}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "grant-reader-on-other-domain",
            "PUT /v3/domains/{d2}/users/{new_other_user}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-inherited-on-domain",
            "PUT /v3/OS-INHERIT/domains/{d1}/users/{new_user}/roles/{member_role}" + INHERITED,
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        # LATCHKEY: a project's subtree is its domain admins' (docs/decisions.md).
        row(
            "grant-inherited-on-project",
            "PUT /v3/OS-INHERIT/projects/{p1}/users/{new_user}/roles/{member_role}" + INHERITED,
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "grant-inherited-on-project-of-other-domain",
            "PUT /v3/OS-INHERIT/projects/{o1}/users/{new_other_user}/roles/{member_role}"
            + INHERITED,
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-reader-on-domain-to-group-of-other-domain",
            "PUT /v3/domains/{d1}/groups/{new_other_group}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "revoke-inherited-on-domain",
            "DELETE /v3/OS-INHERIT/domains/{d1}/users/{new_d1_inherited_member}/roles/{member_role}"
            + INHERITED,
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "check-system-grant",
            "HEAD /v3/system/users/{system_member}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, SYSTEM_MEMBER),
            status=204,
        ),
        row(
            "grant-reader-on-system",
            "PUT /v3/system/users/{new_user}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "grant-reader-on-system-to-group",
            "PUT /v3/system/groups/{new_group}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        # LATCHKEY: who holds which role is an admin's read (identity:role_assignment:list
        # needs `admin` on the scope, or the user asks about itself); Keystone lets the
        # system's and the domain's readers list grants and assignments too.
        row(
            "list-grants-on-project",
            "GET /v3/projects/{p1}/users/{bystander}/roles",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "check-grant-on-project",
            "GET /v3/projects/{p1}/users/{bystander}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
            status=204,
        ),
        row(
            "list-grants-on-sibling-project",
            "GET /v3/projects/{p2}/users/{bystander}/roles",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
        ),
        row(
            "list-grants-on-domain",
            "GET /v3/domains/{d1}/users/{bystander}/roles",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "list-inherited-grants-on-domain",
            "GET /v3/OS-INHERIT/domains/{d1}/users/{bystander}/roles/inherited_to_projects",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "list-grants-on-project-of-other-domain",
            "GET /v3/projects/{o1}/users/{stranger}/roles",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-own-grants-on-project", "GET /v3/projects/{p1}/users/{self}/roles", allow=EVERYONE
        ),
        # The system reader asks about itself.
        row(
            "list-system-grants",
            "GET /v3/system/users/{system_reader}/roles",
            allow=(SYSTEM_ADMIN, SYSTEM_READER),
        ),
        row(
            "revoke-member-on-project",
            "DELETE /v3/projects/{p1}/users/{new_p1_member}/roles/{member_role}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "revoke-reader-on-system",
            "DELETE /v3/system/users/{new_system_reader}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN,),
        ),
    ],
    # LATCHKEY: as for grants, listing others' assignments needs `admin` on the scope.
    "role_assignments": [
        row("list-all", "GET /v3/role_assignments", allow=(SYSTEM_ADMIN,)),
        row(
            "list-of-project",
            "GET /v3/role_assignments?scope.project.id={p1}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "list-of-sibling-project",
            "GET /v3/role_assignments?scope.project.id={p2}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, OTHER_PROJECT_ADMIN),
        ),
        row(
            "list-of-project-of-other-domain",
            "GET /v3/role_assignments?scope.project.id={o1}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-of-domain",
            "GET /v3/role_assignments?scope.domain.id={d1}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "list-of-other-domain",
            "GET /v3/role_assignments?scope.domain.id={d2}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-of-system",
            "GET /v3/role_assignments?scope.system=all",
            allow=(SYSTEM_ADMIN,),
        ),
        row("list-own", "GET /v3/role_assignments?user.id={self}", allow=EVERYONE),
        row(
            "list-of-user",
            "GET /v3/role_assignments?user.id={bystander}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
        row(
            "list-of-user-of-other-domain",
            "GET /v3/role_assignments?user.id={stranger}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-effective-of-project",
            "GET /v3/role_assignments?scope.project.id={p1}&effective",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "list-of-group-of-other-domain",
            "GET /v3/role_assignments?group.id={other_group}",
            allow=(SYSTEM_ADMIN,),
        ),
        # A filter on the role alone reaches every scope: the cloud's.
        row(
            "list-of-role",
            "GET /v3/role_assignments?role.id={admin_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-of-project-for-user-of-other-domain",
            "GET /v3/role_assignments?scope.project.id={p1}&user.id={stranger}",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN, PROJECT_ADMIN),
        ),
        row(
            "list-subtree-of-project",
            "GET /v3/role_assignments?scope.project.id={p1}&include_subtree=true",
            allow=(SYSTEM_ADMIN, DOMAIN_ADMIN),
        ),
    ],
    "catalog": [
        # LATCHKEY: services and endpoints are read by any token holding a role (its
        # catalog shows them already); Keystone keeps them to system readers.
        row("list-services", "GET /v3/services", allow=EVERYONE),
        row("get-service", "GET /v3/services/{service}", allow=EVERYONE),
        row("list-endpoints", "GET /v3/endpoints", allow=EVERYONE),
        row("get-endpoint", "GET /v3/endpoints/{endpoint}", allow=EVERYONE),
        row("list-regions", "GET /v3/regions", allow=EVERYONE),
        row("get-region", "GET /v3/regions/{region}", allow=EVERYONE),
        row(
            "create-service",
            "POST /v3/services",
            {"service": {"type": "{persona}", "name": "{persona}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-service",
            "PATCH /v3/services/{service}",
            {"service": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-service", "DELETE /v3/services/{new_service}", allow=(SYSTEM_ADMIN,)),
        row(
            "create-endpoint",
            "POST /v3/endpoints",
            {
                "endpoint": {
                    "service_id": "{service}",
                    "interface": "internal",
                    "url": "https://{persona}.example",
                }
            },
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-endpoint",
            "PATCH /v3/endpoints/{endpoint}",
            {"endpoint": {"url": "https://shop.example/v2"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-endpoint", "DELETE /v3/endpoints/{new_endpoint}", allow=(SYSTEM_ADMIN,)),
        row(
            "create-region-by-put",
            "PUT /v3/regions/{persona}-put",
            {"region": {}},
            allow=(SYSTEM_ADMIN,),
            status=201,
        ),
        row(
            "create-region",
            "POST /v3/regions",
            {"region": {"id": "{persona}"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-region",
            "PATCH /v3/regions/{region}",
            {"region": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("delete-region", "DELETE /v3/regions/{new_region}", allow=(SYSTEM_ADMIN,)),
    ],
    # The trust is the bystander's (trustor, member on p1) to the project member.
    "trusts": [
        # LATCHKEY: a list without a filter answers the caller's own trusts (as trustor
        # or trustee) instead of Keystone's 403 for anyone but system readers.
        row(
            "list-trusts",
            "GET /v3/OS-TRUST/trusts",
            allow=EVERYONE,
            hides="trust",
            sees_all=(*SYSTEM_READERS, PROJECT_MEMBER),
        ),
        row(
            "list-own-trusts-as-trustee",
            "GET /v3/OS-TRUST/trusts?trustee_user_id={self}",
            allow=EVERYONE,
        ),
        row(
            "list-own-trusts-as-trustor",
            "GET /v3/OS-TRUST/trusts?trustor_user_id={self}",
            allow=EVERYONE,
        ),
        row(
            "list-trusts-of-trustor",
            "GET /v3/OS-TRUST/trusts?trustor_user_id={bystander}",
            allow=SYSTEM_READERS,
        ),
        # Someone else's trust answers 404, as a missing one.
        row(
            "get-trust",
            "GET /v3/OS-TRUST/trusts/{trust}",
            allow=(*SYSTEM_READERS, PROJECT_MEMBER),
            refused=404,
        ),
        row(
            "check-trust-role",
            "HEAD /v3/OS-TRUST/trusts/{trust}/roles/{member_role}",
            allow=(*SYSTEM_READERS, PROJECT_MEMBER),
            refused=404,
        ),
        row(
            "list-trust-roles",
            "GET /v3/OS-TRUST/trusts/{trust}/roles",
            allow=(*SYSTEM_READERS, PROJECT_MEMBER),
            refused=404,
        ),
        # Keystone: a trustor creates trusts of roles it holds on the project.
        row(
            "create-trust-for-self",
            "POST /v3/OS-TRUST/trusts",
            {
                "trust": {
                    "trustor_user_id": "{self}",
                    "trustee_user_id": "{bystander}",
                    "project_id": "{p1}",
                    "impersonation": False,
                    "roles": [{"name": "reader"}],
                }
            },
            allow=PROJECT_READERS,
        ),
        row(
            "create-trust-of-role-not-held",
            "POST /v3/OS-TRUST/trusts",
            {
                "trust": {
                    "trustor_user_id": "{self}",
                    "trustee_user_id": "{bystander}",
                    "project_id": "{p1}",
                    "impersonation": False,
                    "roles": [{"name": "admin"}],
                }
            },
            allow=(PROJECT_ADMIN,),
        ),
        # LATCHKEY: the trustor is always the caller, a system admin's too.
        row(
            "create-trust-for-another-trustor",
            "POST /v3/OS-TRUST/trusts",
            {
                "trust": {
                    "trustor_user_id": "{bystander}",
                    "trustee_user_id": "{self}",
                    "project_id": "{p1}",
                    "impersonation": False,
                    "roles": [{"name": "member"}],
                }
            },
        ),
        # Keystone: the trustor deletes, or a system admin; the trustee sees the trust
        # (403), anyone else does not (404).
        row(
            "delete-trust",
            "DELETE /v3/OS-TRUST/trusts/{new_trust}",
            allow=(SYSTEM_ADMIN,),
            refused=404,
            project_member=403,
            restricted_credential=404,  # not its owner's trust: missing before restricted
        ),
    ],
    # The credential and EC2 key are the bystander's: someone else's answers 404, as a
    # missing one (docs/decisions.md); restricted credentials touch none, reads included.
    "credentials": [
        # Everyone lists (their own, or for the cloud's admins, all).
        # LATCHKEY: credential reads are the owner's and the cloud admins' (the blob
        # is a secret); Keystone's system readers read every blob.
        row(
            "list-credentials",
            "GET /v3/credentials",
            allow=EVERYONE,
            hides="credential",
            sees_all=(SYSTEM_ADMIN,),
            restricted_credential=403,
        ),
        row(
            "get-credential",
            "GET /v3/credentials/{credential}",
            allow=(SYSTEM_ADMIN,),
            refused=404,
            restricted_credential=403,
        ),
        row(
            "create-own-credential",
            "POST /v3/credentials",
            {"credential": {"user_id": "{self}", "type": "cert", "blob": "x"}},
            allow=EVERYONE,
        ),
        row(
            "create-credential-for-another",
            "POST /v3/credentials",
            {"credential": {"user_id": "{bystander}", "type": "cert", "blob": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-credential",
            "PATCH /v3/credentials/{credential}",
            {"credential": {"blob": "y"}},
            allow=(SYSTEM_ADMIN,),
            refused=404,
            restricted_credential=403,
        ),
        row(
            "delete-credential",
            "DELETE /v3/credentials/{new_credential}",
            allow=(SYSTEM_ADMIN,),
            refused=404,
            restricted_credential=403,
        ),
        # Naming another user is refused outright (Keystone answers an empty list).
        row(
            "list-credentials-of-another",
            "GET /v3/credentials?user_id={bystander}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-ec2-of-another",
            "GET /v3/users/{bystander}/credentials/OS-EC2",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "get-ec2-of-another",
            "GET /v3/users/{bystander}/credentials/OS-EC2/{ec2_access}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "create-ec2-for-another",
            "POST /v3/users/{bystander}/credentials/OS-EC2",
            {"tenant_id": "{p1}"},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "list-own-ec2",
            "GET /v3/users/{self}/credentials/OS-EC2",
            allow=EVERYONE,
            restricted_credential=403,
        ),
        # As Keystone: any project may be named; ec2tokens gives a token only while the
        # user holds roles there.
        row(
            "create-own-ec2",
            "POST /v3/users/{self}/credentials/OS-EC2",
            {"tenant_id": "{p1}"},
            allow=EVERYONE,
        ),
    ],
    # The bystander's application credential: a human's credentials are that human's
    # alone. LATCHKEY: not even a system reader reads them, nor a system admin deletes
    # them (Keystone allows both). Application credentials are made from a project-scoped
    # token (the credential's project): from a system or domain token, 400.
    "application_credentials": [
        row("list-own", "GET /v3/users/{self}/application_credentials", allow=EVERYONE),
        row(
            "list-of-another",
            "GET /v3/users/{bystander}/application_credentials",
        ),
        row("list-access-rules-of-another", "GET /v3/users/{bystander}/access_rules"),
        row(
            "get-of-another",
            "GET /v3/users/{bystander}/application_credentials/{bystander_credential}",
        ),
        row(
            "create-for-another",
            "POST /v3/users/{bystander}/application_credentials",
            {"application_credential": {"name": "{persona}"}},
            cells=NOT_PROJECT_SCOPED,
        ),
        row(
            "delete-of-another",
            "DELETE /v3/users/{bystander}/application_credentials/{bystander_credential}",
        ),
        row(
            "create-own-with-role-not-held",
            "POST /v3/users/{self}/application_credentials",
            {"application_credential": {"name": "{persona}-admin", "roles": [{"name": "admin"}]}},
            allow=(PROJECT_ADMIN, OTHER_PROJECT_ADMIN),
            cells=NOT_PROJECT_SCOPED,
        ),
        row(
            "create-own",
            "POST /v3/users/{self}/application_credentials",
            {"application_credential": {"name": "{persona}"}},
            allow=(*PROJECT_READERS, OTHER_PROJECT_ADMIN),
            cells=NOT_PROJECT_SCOPED,
        ),
    ],
    # Domain `default` holds the admin project and the cloud admin. LATCHKEY: only the
    # cloud acts on them (privileged targets): Keystone's domain admin of `default`
    # could update the cloud admin (its password with it), grant roles on the admin
    # project, and so become a cloud admin.
    "default_domain": [
        # LATCHKEY: the admin project is privileged for reads by id too (its domain
        # admin still finds it in `GET /v3/projects`); Keystone lets the domain read it.
        row("get-admin-project", "GET /v3/projects/{admin_project}", allow=SYSTEM_READERS),
        row(
            "list-admin-project-tags",
            "GET /v3/projects/{admin_project}/tags",
            allow=SYSTEM_READERS,
        ),
        row(
            "update-admin-project",
            "PATCH /v3/projects/{admin_project}",
            {"project": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "add-tag-to-admin-project",
            "PUT /v3/projects/{admin_project}/tags/{persona}",
            allow=(SYSTEM_ADMIN,),
            status=201,
        ),
        row(
            "grant-member-on-admin-project",
            "PUT /v3/projects/{admin_project}/users/{new_default_user}/roles/{member_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "revoke-admin-on-admin-project",
            "DELETE /v3/projects/{admin_project}/users/{new_cloud_admin}/roles/{admin_role}",
            allow=(SYSTEM_ADMIN,),
        ),
        # An inherited grant on `default` never reaches the admin project
        # (docs/decisions.md), so its domain admin may make one.
        row(
            "grant-inherited-on-default-domain",
            "PUT /v3/OS-INHERIT/domains/default/users/{new_default_user}/roles/{admin_role}"
            + INHERITED,
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "grant-admin-on-default-domain",
            "PUT /v3/domains/default/users/{new_default_user}/roles/{admin_role}",
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "list-assignments-of-admin-project",
            "GET /v3/role_assignments?scope.project.id={admin_project}",
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "create-user-in-default-domain",
            "POST /v3/users",
            {"user": {"name": "{persona}-default", "password": PASSWORD, "domain_id": "default"}},
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "update-user-in-default-domain",
            "PATCH /v3/users/{new_default_user}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "update-cloud-admin-user",
            "PATCH /v3/users/{admin_user}",
            {"user": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "update-second-cloud-admin",
            "PATCH /v3/users/{new_cloud_admin}",
            {"user": {"password": "{persona}-taken-over-1"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row(
            "change-password-of-second-cloud-admin",
            "POST /v3/users/{new_cloud_admin}/password",
            {"user": {"original_password": PASSWORD, "password": "{persona}-new-password-1"}},
            allow=(SYSTEM_ADMIN,),
            status=204,
        ),
        # A group holding a role on the admin project: joining it makes a cloud admin.
        row(
            "add-member-to-group-of-cloud-admins",
            "PUT /v3/groups/{new_cloud_admin_group}/users/{new_default_user}",
            allow=(SYSTEM_ADMIN,),
        ),
        # Granting cloud operators a role on the domain gains the granter nothing (as
        # "grant-member-on-project-to-system-reader"): the domain's admins may.
        row(
            "grant-on-default-domain-to-group-of-cloud-admins",
            "PUT /v3/domains/default/groups/{new_cloud_admin_group}/roles/{reader_role}",
            allow=(SYSTEM_ADMIN, DEFAULT_DOMAIN_ADMIN),
        ),
        row(
            "delete-second-cloud-admin", "DELETE /v3/users/{new_cloud_admin}", allow=(SYSTEM_ADMIN,)
        ),
    ],
    # The cloud's own configuration: Keystone's admin_required / system reader rules.
    "cloud": [
        row("get-domain-config-defaults", "GET /v3/domains/config/default", allow=SYSTEM_READERS),
        # d1 has none: its readers get as far as the 404, everyone else is refused.
        row("get-domain-config", "GET /v3/domains/{d1}/config", allow=SYSTEM_READERS, status=404),
        # LATCHKEY: a domain's own admins do not configure its identity backend
        # (Keystone: system admins too).
        row(
            "create-domain-config",
            "PUT /v3/domains/{new_disabled_domain}/config",
            {"config": {"identity": {"driver": "sql"}}},
            allow=(SYSTEM_ADMIN,),
            status=201,
        ),
        row("list-consumers", "GET /v3/OS-OAUTH1/consumers", allow=SYSTEM_READERS),
        row(
            "create-consumer",
            "POST /v3/OS-OAUTH1/consumers",
            {"consumer": {"description": "x"}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("list-endpoint-groups", "GET /v3/OS-EP-FILTER/endpoint_groups", allow=SYSTEM_READERS),
        row(
            "create-endpoint-group",
            "POST /v3/OS-EP-FILTER/endpoint_groups",
            {"endpoint_group": {"name": "{persona}", "filters": {"interface": "public"}}},
            allow=(SYSTEM_ADMIN,),
        ),
        row("list-policy-blobs", "GET /v3/policies", allow=SYSTEM_READERS),
        row(
            "create-policy-blob",
            "POST /v3/policies",
            {"policy": {"type": "application/json", "blob": "[]"}},
            allow=(SYSTEM_ADMIN,),
        ),
    ],
    # A token's own scopes: every token. Someone else's token: the system's readers
    # validate it (and relying services, holding `service`), its system admins revoke it.
    "auth": [
        row(
            "validate-own-token",
            "GET /v3/auth/tokens",
            allow=EVERYONE,
            headers={"X-Subject-Token": "{self_token}"},
        ),
        row(
            "validate-other-token",
            "GET /v3/auth/tokens",
            allow=SYSTEM_READERS,
            headers={"X-Subject-Token": "{bystander_token}"},
        ),
        row(
            "revoke-other-token",
            "DELETE /v3/auth/tokens",
            allow=(SYSTEM_ADMIN,),
            headers={"X-Subject-Token": "{new_bystander_token}"},
        ),
        row("auth-projects", "GET /v3/auth/projects", allow=EVERYONE),
        row("auth-domains", "GET /v3/auth/domains", allow=EVERYONE),
        row("auth-system", "GET /v3/auth/system", allow=EVERYONE),
        row("auth-catalog", "GET /v3/auth/catalog", allow=EVERYONE),
    ],
}


class Placeholders(dict[str, str]):
    """Fills a row's templates for one persona; ``{new_*}`` builds a fresh victim."""

    def __init__(self, world: KeystoneWorld, persona: str) -> None:
        super().__init__(world.ids, **world.user_ids, persona=persona.replace("_", "-"))
        self._world = world
        # Without a token there is no "self": ask about someone else.
        self["self"] = world.user_ids.get(persona, world.ids["bystander"])
        self["self_token"] = world.tokens.get(persona, world.ids["bystander_token"])

    def __missing__(self, key: str) -> str:
        if not key.startswith("new_"):
            raise KeyError(key)
        self[key] = self._world.fresh(key.removeprefix("new_"))
        return self[key]


def perform(world: KeystoneWorld, persona: str, action: Row) -> tuple[TestResponse, Placeholders]:
    values = Placeholders(world, persona)
    body = _fill(action.body, cast(Any, values))  # test_personas' helper, same protocol
    path = action.path.format_map(values)
    headers = {name: value.format_map(values) for name, value in action.headers.items()}
    return world.call(action.method, path, world.tokens.get(persona), body, headers), values


def check(response: TestResponse, expected: int, label: str, method: str = "GET") -> None:
    body = response.get_json(silent=True) or {}
    error = body.get("error") if isinstance(body, dict) else None
    assert response.status_code == expected, (
        f"{label}: expected {expected}, got {response.status_code}: {body}"
    )
    if expected >= 400 and method != "HEAD":  # Keystone's error shape; HEAD has no body
        assert isinstance(error, dict) and error.get("code") == expected, f"{label}: {body}"


@pytest.fixture
def world(api: Api) -> KeystoneWorld:
    return KeystoneWorld(api)


@pytest.mark.parametrize("family", list(MATRIX))
def test_keystone_persona_matrix(
    world: KeystoneWorld, family: str, subtests: pytest.Subtests
) -> None:
    """Every row of one family, for every persona and without a token."""
    for action in MATRIX[family]:
        for persona in (*PERSONAS, ANONYMOUS):
            label = f"{persona}-{action.name}"
            with subtests.test(msg=label):
                response, values = perform(world, persona, action)
                check(response, action.expected(persona), label, action.method)
                if action.hides and response.status_code == 200 and persona not in action.sees_all:
                    hidden = values[action.hides]
                    assert hidden not in response.get_data(as_text=True), (
                        f"{label}: the answer shows {action.hides}"
                    )
