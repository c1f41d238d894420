"""The world of ``test_keystone_personas.py``: Keystone's personas, built through /v3.

Keystone's ``keystone/tests/protection/v3`` personas (system, domain and project
admin/member/reader) plus three of Latchkey's: a restricted application credential
of the project admin, the admin of a second project of the same domain, and the
admin of domain ``default`` (which holds the admin project and the cloud admin). Every
token is issued by ``POST /v3/auth/tokens`` and sent as ``X-Auth-Token``.
"""

from __future__ import annotations

import itertools
from typing import Any

from werkzeug.test import TestResponse

from tests.conftest import ADMIN_PASSWORD, Api

PASSWORD = "persona-password-1234"  # the password policy wants at least 12 characters
SUBJECT = "X-Subject-Token"

SYSTEM_ADMIN, SYSTEM_MEMBER, SYSTEM_READER = "system_admin", "system_member", "system_reader"
DOMAIN_ADMIN, DOMAIN_MEMBER, DOMAIN_READER = "domain_admin", "domain_member", "domain_reader"
PROJECT_ADMIN, PROJECT_MEMBER, PROJECT_READER = "project_admin", "project_member", "project_reader"
RESTRICTED = "restricted_credential"  # project_admin's restricted application credential
OTHER_PROJECT_ADMIN = "other_project_admin"  # admin on p2, p1's sibling in d1
# Admin of domain `default`, which holds the admin project and the cloud admin: the
# admin of another domain for every row about d1, and for the rows about `default` the
# one who must not reach the cloud through it.
DEFAULT_DOMAIN_ADMIN = "default_domain_admin"
PERSONAS = (
    SYSTEM_ADMIN,
    SYSTEM_MEMBER,
    SYSTEM_READER,
    DOMAIN_ADMIN,
    DOMAIN_MEMBER,
    DOMAIN_READER,
    RESTRICTED,  # before its owner: the owner's password change (last row) ends its tokens
    PROJECT_ADMIN,
    PROJECT_MEMBER,
    PROJECT_READER,
    OTHER_PROJECT_ADMIN,
    DEFAULT_DOMAIN_ADMIN,
)
ANONYMOUS = "anonymous"
SYSTEM = {"system": {"all": True}}
# persona -> (scope, role): scope "system", "d1" (domain-scoped) or a project placeholder.
GRANTS: dict[str, tuple[str, str]] = {
    SYSTEM_ADMIN: ("system", "admin"),
    SYSTEM_MEMBER: ("system", "member"),
    SYSTEM_READER: ("system", "reader"),
    DOMAIN_ADMIN: ("d1", "admin"),
    DOMAIN_MEMBER: ("d1", "member"),
    DOMAIN_READER: ("d1", "reader"),
    PROJECT_ADMIN: ("p1", "admin"),
    PROJECT_MEMBER: ("p1", "member"),
    PROJECT_READER: ("p1", "reader"),
    OTHER_PROJECT_ADMIN: ("p2", "admin"),
    DEFAULT_DOMAIN_ADMIN: ("default", "admin"),
}


class KeystoneWorld:
    """Domains d1 (the personas') and d2 (a stranger's), projects p1, p2 in d1 and o1
    in d2, groups, a catalog entry, a trust, credentials, and one token per persona."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._serial = itertools.count()
        self._last_system_group: str | None = None
        self.admin = self.login("admin", project="admin", project_domain="default")
        self.ids: dict[str, str] = {}
        for role in ("admin", "member", "reader", "service"):
            self.ids[f"{role}_role"] = self._id_of(f"/v3/roles?name={role}", "roles")
        self.ids["admin_project"] = self._id_of("/v3/projects?name=admin", "projects")
        self.ids["admin_user"] = self._id_of("/v3/users?name=admin", "users")
        d1 = self.ids["d1"] = self._post("/v3/domains", "domain", {"name": "d1"})
        d2 = self.ids["d2"] = self._post("/v3/domains", "domain", {"name": "d2"})
        self.ids["p1"] = self._post("/v3/projects", "project", {"name": "p1", "domain_id": d1})
        self.ids["p2"] = self._post("/v3/projects", "project", {"name": "p2", "domain_id": d1})
        self.ids["o1"] = self._post("/v3/projects", "project", {"name": "o1", "domain_id": d2})
        self.ids["group"] = self._post("/v3/groups", "group", {"name": "g1", "domain_id": d1})
        self.ids["other_group"] = self._post("/v3/groups", "group", {"name": "g2", "domain_id": d2})
        self.ids["bystander"] = self.user("bystander", d1)  # member on p1, in group g1
        self.ids["stranger"] = self.user("stranger", d2)  # member on o1, in group g2
        self.grant(f"/v3/projects/{self.ids['p1']}", self.ids["bystander"], "member")
        self.grant(f"/v3/projects/{self.ids['o1']}", self.ids["stranger"], "member")
        self.ok("PUT", f"/v3/groups/{self.ids['group']}/users/{self.ids['bystander']}")
        self.ok("PUT", f"/v3/groups/{self.ids['other_group']}/users/{self.ids['stranger']}")
        self.user_ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        for persona, (scope, role) in GRANTS.items():
            self._persona(persona, scope, role)
        self.user_ids[RESTRICTED] = self.user_ids[PROJECT_ADMIN]
        self.tokens[RESTRICTED] = self._restricted_token(PROJECT_ADMIN)
        self._catalog()
        self._credentials()

    # -- calls -----------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        token: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        headers = {**(headers or {}), **({"X-Auth-Token": token} if token else {})}
        return self.api.client.open(path, method=method, json=body, headers=headers)

    def ok(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        response = self.call(method, path, token or self.admin, body)
        expected = {"POST": 201, "PUT": 204, "DELETE": 204}.get(method, 200)
        assert response.status_code == expected, (method, path, response.get_json(silent=True))
        return response.get_json(silent=True)

    def login(self, name: str, *, scope: Any = None, **by_name: str) -> str:
        user = {
            "name": name,
            "domain": {"id": by_name.pop("user_domain", "default")},
            "password": ADMIN_PASSWORD if name == "admin" else PASSWORD,
        }
        identity = {"methods": ["password"], "password": {"user": user}}
        auth: dict[str, Any] = {"identity": identity}
        if "project" in by_name:
            domain = {"id": by_name["project_domain"]}
            auth["scope"] = {"project": {"name": by_name["project"], "domain": domain}}
        elif scope is not None:
            auth["scope"] = scope
        response = self.api.client.post("/v3/auth/tokens", json={"auth": auth})
        assert response.status_code == 201, response.get_json()
        return str(response.headers[SUBJECT])

    # -- fresh victims for destructive rows -----------------------------------------------

    def fresh(self, kind: str) -> str:
        """A new object for one destructive check, so checks never share a victim."""
        name = f"fresh-{next(self._serial)}"
        d1, d2 = self.ids["d1"], self.ids["d2"]
        if kind == "disabled_domain":
            return self._post("/v3/domains", "domain", {"name": name, "enabled": False})
        if kind in ("project", "other_project"):
            domain = d1 if kind == "project" else d2
            return self._post("/v3/projects", "project", {"name": name, "domain_id": domain})
        if kind in ("group", "other_group"):
            domain = d1 if kind == "group" else d2
            return self._post("/v3/groups", "group", {"name": name, "domain_id": domain})
        if kind in ("user", "other_user"):
            return self.user(name, d1 if kind == "user" else d2)
        if kind == "group_member":
            user = self.user(name, d1)
            self.ok("PUT", f"/v3/groups/{self.ids['group']}/users/{user}")
            return user
        if kind == "p1_member":
            user = self.user(name, d1)
            self.grant(f"/v3/projects/{self.ids['p1']}", user, "member")
            return user
        if kind == "system_reader":
            user = self.user(name, d1)
            self.grant("/v3/system", user, "reader")
            return user
        if kind == "system_group":
            group = self._post("/v3/groups", "group", {"name": name, "domain_id": d1})
            self.ok("PUT", f"/v3/system/groups/{group}/roles/{self.ids['reader_role']}")
            self._last_system_group = group
            return group
        if kind == "system_group_member":  # of the last fresh system group, or a new one
            group = self._last_system_group or self.fresh("system_group")
            user = self.user(name, d1)
            self.ok("PUT", f"/v3/groups/{group}/users/{user}")
            return user
        if kind == "d1_inherited_member":
            user = self.user(name, d1)
            role = self.ids["member_role"]
            self.ok(
                "PUT",
                f"/v3/OS-INHERIT/domains/{d1}/users/{user}/roles/{role}/inherited_to_projects",
            )
            return user
        if kind in ("default_user", "cloud_admin"):
            user = self.user(name, "default")
            if kind == "cloud_admin":
                self.grant(f"/v3/projects/{self.ids['admin_project']}", user, "admin")
            return user
        if kind == "cloud_admin_group":
            group = self._post("/v3/groups", "group", {"name": name, "domain_id": "default"})
            role = self.ids["admin_role"]
            self.ok("PUT", f"/v3/projects/{self.ids['admin_project']}/groups/{group}/roles/{role}")
            return group
        if kind == "domain_role":
            return self._post("/v3/roles", "role", {"name": name, "domain_id": d1})
        if kind == "role":
            return self._post("/v3/roles", "role", {"name": name})
        if kind == "implying_role":
            role = self._post("/v3/roles", "role", {"name": name})
            path = f"/v3/roles/{role}/implies/{self.ids['reader_role']}"
            response = self.call("PUT", path, self.admin)
            assert response.status_code == 201, response.get_json()
            return role
        if kind == "region":
            return str(self.ok("POST", "/v3/regions", {"region": {"id": name}})["region"]["id"])
        if kind == "service":
            return self._post("/v3/services", "service", {"type": name, "name": name})
        if kind == "endpoint":
            return self._endpoint()
        if kind == "credential":
            return self._credential(self.ids["bystander"], name)
        if kind == "bystander_token":
            return self._bystander_token()
        if kind == "trust":
            return self._trust()
        raise AssertionError(f"no fresh {kind}")

    # -- building -------------------------------------------------------------------

    def user(self, name: str, domain_id: str) -> str:
        body = {"name": name, "password": PASSWORD, "domain_id": domain_id}
        return self._post("/v3/users", "user", body)

    def grant(self, scope_path: str, user: str, role: str) -> None:
        self.ok("PUT", f"{scope_path}/users/{user}/roles/{self.ids[f'{role}_role']}")

    def _persona(self, persona: str, scope: str, role: str) -> None:
        domain = "default" if scope == "default" else self.ids["d1"]
        name = persona.replace("_", "-")
        self.user_ids[persona] = user = self.user(name, domain)
        if scope == "system":
            self.grant("/v3/system", user, role)
            self.tokens[persona] = self.login(name, user_domain=domain, scope=SYSTEM)
        elif scope in ("d1", "default"):
            self.grant(f"/v3/domains/{domain}", user, role)
            scoped = {"domain": {"id": domain}}
            self.tokens[persona] = self.login(name, user_domain=domain, scope=scoped)
        else:
            self.grant(f"/v3/projects/{self.ids[scope]}", user, role)
            self.tokens[persona] = self.login(
                name, user_domain=domain, project=scope, project_domain=domain
            )

    def _restricted_token(self, owner: str) -> str:
        path = f"/v3/users/{self.user_ids[owner]}/application_credentials"
        body = {"application_credential": {"name": "restricted"}}
        created = self.ok("POST", path, body, token=self.tokens[owner])["application_credential"]
        assert created["unrestricted"] is False
        self.ids["restricted_credential"] = created["id"]
        identity = {
            "methods": ["application_credential"],
            "application_credential": {"id": created["id"], "secret": created["secret"]},
        }
        response = self.api.client.post("/v3/auth/tokens", json={"auth": {"identity": identity}})
        assert response.status_code == 201, response.get_json()
        return str(response.headers[SUBJECT])

    def _catalog(self) -> None:
        self.ids["region"] = self.fresh("region")
        self.ids["service"] = self.fresh("service")
        self.ids["endpoint"] = self._endpoint()

    def _endpoint(self) -> str:
        body = {
            "service_id": self.ids["service"],
            "interface": "public",
            "url": "https://shop.example/v1",
            "region_id": self.ids["region"],
        }
        return self._post("/v3/endpoints", "endpoint", body)

    def _credentials(self) -> None:
        """The bystander's credential and EC2 key, a trust from the bystander, and an
        application credential of the bystander."""
        bystander = self.ids["bystander"]
        self.ids["credential"] = self._credential(bystander, "blob")
        self.tokens["bystander"] = self.ids["bystander_token"] = self._bystander_token()
        ec2 = self.ok(
            "POST",
            f"/v3/users/{bystander}/credentials/OS-EC2",
            {"tenant_id": self.ids["p1"]},
            token=self.tokens["bystander"],
        )
        self.ids["ec2_access"] = ec2["credential"]["access"]
        self.ids["trust"] = self._trust()
        path = f"/v3/users/{bystander}/application_credentials"
        body = {"application_credential": {"name": "bystanders"}}
        created = self.ok("POST", path, body, token=self.tokens["bystander"])
        self.ids["bystander_credential"] = created["application_credential"]["id"]

    def _bystander_token(self) -> str:
        d1 = self.ids["d1"]
        return self.login("bystander", user_domain=d1, project="p1", project_domain=d1)

    def _credential(self, user: str, blob: str) -> str:
        body = {"user_id": user, "type": "cert", "blob": blob}
        return self._post("/v3/credentials", "credential", body)

    def _trust(self) -> str:
        """A trust from the bystander (member on p1) to the project member."""
        body = {
            "trust": {
                "trustor_user_id": self.ids["bystander"],
                "trustee_user_id": self.user_ids[PROJECT_MEMBER],
                "project_id": self.ids["p1"],
                "impersonation": False,
                "roles": [{"name": "member"}],
            }
        }
        created = self.ok("POST", "/v3/OS-TRUST/trusts", body, token=self.tokens["bystander"])
        return str(created["trust"]["id"])

    def _post(self, path: str, key: str, body: dict[str, Any]) -> str:
        return str(self.ok("POST", path, {key: body})[key]["id"])

    def _id_of(self, path: str, key: str) -> str:
        (item,) = self.ok("GET", path)[key]
        return str(item["id"])
