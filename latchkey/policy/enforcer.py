"""The one enforcement function of Latchkey's own API.

Every endpoint names its action (``identity:project:create``) and the
service calls ``Enforcer.enforce``; there are no role checks anywhere else.
The rule table maps actions to the default roles:

* reads need ``reader``, writes need ``admin``;
* on the target's project (project-scoped token), or its domain
  (domain-scoped token), or anywhere for holders of the role on the
  operators' admin project ("cloud" scope);
* some actions are also allowed on oneself (``self``), and granting a role
  needs holding it (no escalation);
* targets that touch the cloud itself (the admin project, the users and
  groups holding roles there) are ``privileged``: only cloud callers act on
  them, or else a domain admin of the admin project's domain could make
  themselves cloud admin;
* an action that reaches into a second domain (granting a role to, or adding
  to a group, a user of another domain) needs cloud scope;
* ``self_only`` targets (a human's application credentials) are their
  owner's alone, whatever the caller's roles;
* restricted application credentials (the default) never change what anyone
  may do: every action whose verb is not a read (``changes_privileges``) is
  refused to their tokens, whatever their roles (``restricted_refuses``).

The table is the ceiling for Latchkey's own API (it plays the part the
operator's Polar boundary plays for other services). Inside it, a project's
tenant policy decides too (``TenantLayer``, wired in ``create_app``): an
action on a project's resource must also be allowed by that project's rules,
if it has any, exactly as for any other service in the catalog. Exempt, and
why (docs/decisions.md): callers scoped to the operators' admin project (a
tenant cannot restrict its operators) and ``policy:policy:*`` (a project's
admins can always repair a policy that locks them out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from latchkey.errors import AuthenticationRequired, Forbidden
from latchkey.policy.context import AuthContext

CLOUD, DOMAIN, PROJECT, ANY = "cloud", "domain", "project", "any"
# Restricted application credentials (the default kind) never change what anyone
# may do. Named once, here, and derived from the action's verb so that an action
# added later is refused by default: whatever is not a read (`get`, `list`,
# `list_*`, `validate`) changes privileges or identities, unless named below.
READ_VERBS = frozenset({"get", "list", "validate"})
READ_VERB_PREFIX = "list_"
# Not reads, yet changing nothing: a relying service (often a restricted
# credential holding `service`) asks decisions on its users' behalf, or asks
# OAuth introspection about tokens that are not its own.
RESTRICTED_MAY = frozenset({"policy:decision:on_behalf", "identity:token:introspect"})
# Only about the credential's own user: reading its own credentials, revoking one
# of its own tokens (logging out). Anyone else's: refused.
RESTRICTED_ONLY_ON_SELF = frozenset(
    {
        "identity:application_credential:list",
        "identity:application_credential:get",
        "identity:token:revoke",
    }
)
# Reads that are refused too: an EC2 secret read is an unrestricted token (issue 14).
RESTRICTED_NEVER = frozenset({"identity:credential:get", "identity:credential:list"})
READER, ADMIN, SERVICE = "reader", "admin", "service"
# What a target names for an object that does not exist (the domain of an unknown
# user, say): no one's scope holds it, so only cloud callers get as far as the 404
# and everyone else gets the 403 a foreign object gets.
UNKNOWN = "\x00unknown"


@dataclass(frozen=True)
class Target:
    domain_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None  # the user the action is about, for `self` rules
    role: str | None = None  # the role being granted, for the escalation check
    privileged: bool = False  # touches the cloud operators: cloud scope only
    self_only: bool = False  # only the user named by user_id may act
    other_domain_id: str | None = None  # a second domain the action reaches into
    # The project whose tenant policy also decides, when not project_id (a human's
    # application credential belongs to the project it is scoped to).
    tenant_project_id: str | None = None
    # What tenant rules may test (declared on the identity resource types in the catalog).
    attributes: Mapping[str, Any] | None = field(default=None, compare=False)


def changes_privileges(action: str) -> bool:
    """Does the action change what anyone may do (identities, roles, credentials,
    policies, the catalog, trust material)? Every verb but a read does."""
    if action in RESTRICTED_MAY:
        return False
    verb = action.rsplit(":", 1)[-1]
    return not (verb in READ_VERBS or verb.startswith(READ_VERB_PREFIX))


def restricted_refuses(auth: AuthContext, action: str, target: Target | None = None) -> bool:
    """The rule for restricted application credentials (``auth.restricted``), and for
    tokens obtained through an OS-TRUST trust: delegated authority never changes what
    anyone may do either (docs/decisions.md, issue 14)."""
    if not auth.restricted and auth.trust_id is None:
        return False
    if action in RESTRICTED_NEVER:
        return True
    if action in RESTRICTED_ONLY_ON_SELF:
        return target is None or target.user_id != auth.user_id
    return changes_privileges(action)


@dataclass(frozen=True)
class Rule:
    scope: str  # the widest scope at which holders of `role` are allowed
    role: str
    self_allowed: bool = False
    also_role: str | None = None  # an extra role allowed in any scope (relying services)


RULES: dict[str, Rule] = {
    "identity:domain:create": Rule(CLOUD, ADMIN),
    "identity:domain:list": Rule(CLOUD, READER),
    "identity:domain:get": Rule(DOMAIN, READER),
    "identity:domain:update": Rule(CLOUD, ADMIN),
    "identity:domain:delete": Rule(CLOUD, ADMIN),
    "identity:project:create": Rule(DOMAIN, ADMIN),
    "identity:project:list": Rule(DOMAIN, READER),
    "identity:project:get": Rule(PROJECT, READER),
    "identity:project:update": Rule(PROJECT, ADMIN),
    "identity:project:delete": Rule(DOMAIN, ADMIN),
    # Project scope reaches only application accounts the project owns (their
    # targets carry owner_project_id); humans are managed by domain admins.
    "identity:user:create": Rule(PROJECT, ADMIN),
    "identity:user:list": Rule(PROJECT, READER),
    "identity:user:get": Rule(PROJECT, READER, self_allowed=True),
    "identity:user:update": Rule(PROJECT, ADMIN),
    "identity:user:delete": Rule(PROJECT, ADMIN),
    "identity:user:change_password": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:user:list_projects": Rule(DOMAIN, READER, self_allowed=True),
    "identity:user:list_groups": Rule(DOMAIN, READER, self_allowed=True),  # Keystone /v3
    "identity:group:create": Rule(DOMAIN, ADMIN),
    "identity:group:list": Rule(DOMAIN, READER),
    "identity:group:get": Rule(DOMAIN, READER),
    "identity:group:update": Rule(DOMAIN, ADMIN),
    "identity:group:delete": Rule(DOMAIN, ADMIN),
    "identity:group:list_members": Rule(DOMAIN, READER),
    "identity:group:add_member": Rule(DOMAIN, ADMIN),
    "identity:group:remove_member": Rule(DOMAIN, ADMIN),
    "identity:application_credential:create": Rule(PROJECT, ADMIN, self_allowed=True),
    "identity:application_credential:list": Rule(PROJECT, ADMIN, self_allowed=True),
    "identity:application_credential:get": Rule(PROJECT, ADMIN, self_allowed=True),
    "identity:application_credential:delete": Rule(PROJECT, ADMIN, self_allowed=True),
    "identity:application_credential:rotate": Rule(PROJECT, ADMIN, self_allowed=True),
    # Keystone's credentials (EC2 keys among them): their owner's, and cloud admins'.
    "identity:credential:create": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:credential:list": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:credential:get": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:credential:update": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:credential:delete": Rule(CLOUD, ADMIN, self_allowed=True),
    # Keystone's OS-OAUTH1 consumers: the cloud's.
    "identity:oauth1_consumer:create": Rule(CLOUD, ADMIN),
    "identity:oauth1_consumer:list": Rule(CLOUD, READER),
    "identity:oauth1_consumer:get": Rule(CLOUD, READER),
    "identity:oauth1_consumer:update": Rule(CLOUD, ADMIN),
    "identity:oauth1_consumer:delete": Rule(CLOUD, ADMIN),
    # Keystone's domain configuration (kept and reported, not applied): the cloud's.
    "identity:domain_config:create": Rule(CLOUD, ADMIN),
    "identity:domain_config:get": Rule(CLOUD, READER),
    "identity:domain_config:get_default": Rule(CLOUD, READER),
    "identity:domain_config:update": Rule(CLOUD, ADMIN),
    "identity:domain_config:delete": Rule(CLOUD, ADMIN),
    "identity:service:list": Rule(ANY, READER),
    "identity:service:get": Rule(ANY, READER),
    "identity:service:create": Rule(CLOUD, ADMIN),
    "identity:service:update": Rule(CLOUD, ADMIN),
    "identity:service:delete": Rule(CLOUD, ADMIN),
    # Keystone's regions and endpoints (issue 14): read as services are, written by cloud admins.
    "identity:region:list": Rule(ANY, READER),
    "identity:region:get": Rule(ANY, READER),
    "identity:region:create": Rule(CLOUD, ADMIN),
    "identity:region:update": Rule(CLOUD, ADMIN),
    "identity:region:delete": Rule(CLOUD, ADMIN),
    "identity:endpoint:list": Rule(ANY, READER),
    "identity:endpoint:get": Rule(ANY, READER),
    "identity:endpoint:create": Rule(CLOUD, ADMIN),
    "identity:endpoint:update": Rule(CLOUD, ADMIN),
    "identity:endpoint:delete": Rule(CLOUD, ADMIN),
    # Keystone's endpoint groups and /v3/policies blobs: the cloud's readers and admins.
    "identity:endpoint_group:list": Rule(CLOUD, READER),
    "identity:endpoint_group:get": Rule(CLOUD, READER),
    "identity:endpoint_group:create": Rule(CLOUD, ADMIN),
    "identity:endpoint_group:update": Rule(CLOUD, ADMIN),
    "identity:endpoint_group:delete": Rule(CLOUD, ADMIN),
    "identity:policy_blob:list": Rule(CLOUD, READER),
    "identity:policy_blob:get": Rule(CLOUD, READER),
    "identity:policy_blob:create": Rule(CLOUD, ADMIN),
    "identity:policy_blob:update": Rule(CLOUD, ADMIN),
    "identity:policy_blob:delete": Rule(CLOUD, ADMIN),
    "policy:policy:get": Rule(PROJECT, READER),
    "policy:policy:validate": Rule(PROJECT, ADMIN),
    "policy:policy:update": Rule(PROJECT, ADMIN),
    # Domain-wide rules: a domain's admins (domain-scoped token) or the cloud's.
    "policy:domain_policy:get": Rule(DOMAIN, READER),
    "policy:domain_policy:validate": Rule(DOMAIN, ADMIN),
    "policy:domain_policy:update": Rule(DOMAIN, ADMIN),
    # Asking about oneself needs only a token; asking on someone's behalf is for
    # relying services (the `service` role) and cloud admins.
    "policy:decision:on_behalf": Rule(CLOUD, ADMIN, also_role=SERVICE),
    "identity:role:list": Rule(ANY, READER),
    "identity:role:get": Rule(ANY, READER),
    "identity:role:create": Rule(CLOUD, ADMIN),
    "identity:role:update": Rule(CLOUD, ADMIN),
    "identity:role:delete": Rule(CLOUD, ADMIN),
    "identity:role:imply": Rule(CLOUD, ADMIN),
    "identity:role_assignment:grant": Rule(PROJECT, ADMIN),
    "identity:role_assignment:revoke": Rule(PROJECT, ADMIN),
    "identity:role_assignment:list": Rule(PROJECT, ADMIN, self_allowed=True),
    "identity:token:validate": Rule(CLOUD, READER, self_allowed=True, also_role=SERVICE),
    "identity:token:revoke": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:revocation:list": Rule(CLOUD, READER, also_role=SERVICE),
    # OAuth introspection (RFC 7662) of a token issued to another client: relying
    # services only. A client's own tokens need no action (authlib's check_client).
    "identity:token:introspect": Rule(ANY, SERVICE),
    "audit:event:list": Rule(PROJECT, ADMIN),
    # OS-TRUST: the trustor creates (only for itself) and deletes; trustor and trustee read.
    "identity:trust:create": Rule(CLOUD, ADMIN, self_allowed=True),
    "identity:trust:list": Rule(CLOUD, READER, self_allowed=True),
    "identity:trust:get": Rule(CLOUD, READER, self_allowed=True),
    "identity:trust:delete": Rule(CLOUD, ADMIN, self_allowed=True),
}


@dataclass(frozen=True)
class TenantRefusal:
    rule_id: str | None  # the deny rule that matched; None: no allow rule matched
    decided_by: str  # "policy" or "error"


class TenantLayer(Protocol):
    def refuses(
        self,
        auth: AuthContext,
        action: str,
        project_id: str,
        attributes: Mapping[str, Any] | None,
    ) -> TenantRefusal | None:
        """Why the project's tenant policy refuses the action, or None if it does not."""
        ...


# Never subject to tenant rules: a policy that locked its project's admins out of
# policy:policy:update could never be repaired.
TENANT_EXEMPT_PREFIX = "policy:policy:"


class Enforcer:
    def __init__(self, rules: dict[str, Rule] | None = None) -> None:
        self._rules = dict(RULES if rules is None else rules)
        self._tenant: TenantLayer | None = None

    def use_tenant_layer(self, layer: TenantLayer) -> None:
        """Wired once in ``create_app``: the tenant layer is built after the enforcer,
        which the policy services themselves need."""
        self._tenant = layer

    @property
    def actions(self) -> list[str]:
        return sorted(self._rules)

    def enforce(self, auth: AuthContext | None, action: str, target: Target) -> None:
        if auth is None:
            raise AuthenticationRequired("this operation needs a token", code="token_missing")
        self.refuse_restricted(auth, action, target)
        if not self.allowed(auth, action, target):
            raise Forbidden(
                f"not allowed to perform {action}",
                code="action_forbidden",
                extra={"action": action},
            )
        tenant_project = target.tenant_project_id or target.project_id
        if tenant_project is not None:
            self.enforce_tenant_policy(auth, action, tenant_project, target.attributes)

    def enforce_tenant_policy(
        self,
        auth: AuthContext,
        action: str,
        project_id: str,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """The project's own rules, for an action the table already allows.

        Called by ``enforce`` for targets in a project.
        """
        if self._tenant is None or auth.is_admin_project or action.startswith(TENANT_EXEMPT_PREFIX):
            return
        if auth.system_scoped:  # the operators, as from the admin project (issue 14)
            return
        refusal = self._tenant.refuses(auth, action, project_id, attributes)
        if refusal is not None:
            raise Forbidden(
                f"the project's policy does not allow {action}",
                code="policy_denied",
                extra={
                    "action": action,
                    "decided_by": refusal.decided_by,
                    **({"rule": refusal.rule_id} if refusal.rule_id else {}),
                },
            )

    @staticmethod
    def refuse_restricted(auth: AuthContext, action: str, target: Target | None = None) -> None:
        """403 ``application_credential_restricted`` when the rule refuses the action:
        part of ``enforce``; doors that must refuse before reading a body call it first."""
        if restricted_refuses(auth, action, target):
            if not auth.restricted:  # a trust's token
                raise Forbidden(
                    f"a token obtained through a trust may not perform {action}",
                    code="trust_restricted",
                    extra={"action": action},
                )
            raise Forbidden(
                f"a restricted application credential may not perform {action}",
                code="application_credential_restricted",
                extra={"action": action},
            )

    def allowed(self, auth: AuthContext, action: str, target: Target) -> bool:
        rule = self._rules.get(action)
        if rule is None:
            return False  # deny by default: an action nobody declared is never allowed
        if target.self_only:
            return target.user_id == auth.user_id
        if restricted_refuses(auth, action, target):
            return False
        if not self._role_in_scope(auth, rule, target):
            return False
        if not auth.is_cloud(rule.role):
            acting_on_self = rule.self_allowed and target.user_id == auth.user_id
            if target.privileged and not acting_on_self:
                return False
            if target.other_domain_id is not None and target.other_domain_id != target.domain_id:
                return False
        # No escalation: a role can only be granted by someone holding it.
        return target.role is None or auth.is_cloud(ADMIN) or target.role in auth.roles

    @staticmethod
    def _role_in_scope(auth: AuthContext, rule: Rule, target: Target) -> bool:
        if auth.is_cloud(rule.role):
            return True
        if rule.also_role and rule.also_role in auth.roles:
            return True
        if rule.self_allowed and target.user_id is not None and target.user_id == auth.user_id:
            return True
        if rule.role not in auth.roles:
            return False
        if rule.scope == ANY:
            return True
        if rule.scope in (DOMAIN, PROJECT) and auth.domain_id is not None:
            return auth.domain_id == target.domain_id
        if rule.scope == PROJECT and auth.project_id is not None:
            return auth.project_id == target.project_id
        return False
