# Latchkey's default boundary: the most any principal may do, whatever tenants write.
#
# reader -> read verbs, member -> read and write verbs, admin -> every verb,
# always within the principal's own project (a domain-scoped token: within its
# domain); never across projects. READ_VERBS and WRITE_VERBS are constants
# Latchkey registers (latchkey/policy/engine.py).
#
# An operator replaces this file through the `policy_boundary_file` setting
# (`latchkey policy boundary load FILE`). It must define
# boundary(actor: Principal, action: ActionRef, resource: ResourceRef).

boundary(actor: Principal, action: ActionRef, resource: ResourceRef) if
    actor.project_id != nil and
    resource.project_id = actor.project_id and
    role_allows(actor, action);

boundary(actor: Principal, action: ActionRef, resource: ResourceRef) if
    actor.domain_scoped = true and
    resource.domain_id = actor.domain_id and
    role_allows(actor, action);

role_allows(actor: Principal, _action: ActionRef) if
    "admin" in actor.roles;

role_allows(actor: Principal, action: ActionRef) if
    "member" in actor.roles and
    (action.verb in READ_VERBS or action.verb in WRITE_VERBS);

role_allows(actor: Principal, action: ActionRef) if
    "reader" in actor.roles and
    action.verb in READ_VERBS;
