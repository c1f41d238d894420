"""`latchkey app-cred …` and `latchkey app-account …`: acting with the caller's token.

The commands run the same services (and the same authorization) as the API:
give a token in ``LATCHKEY_TOKEN`` or ``--token-file``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from latchkey.credentials.records import CredentialRecord
from latchkey.frontdoors.cli.support import (
    caller_context,
    clean_errors,
    echo_json,
    token_file_option,
)


def _project_id(ref: str, domain_id: str) -> str:
    directory = current_app.extensions["latchkey"].directory
    project = directory.lookup_project(
        project_id=ref, name=None, domain_id=None
    ) or directory.lookup_project(project_id=None, name=ref, domain_id=domain_id)
    if project is None:
        raise click.ClickException(f"no project {ref!r} in domain {domain_id!r}")
    return str(project.id)


def _credential_view(credential: CredentialRecord) -> dict[str, Any]:
    fields = (
        "id",
        "name",
        "description",
        "user_id",
        "project_id",
        "roles",
        "unrestricted",
        "expires_at",
        "access_rules",
        "allowed_cidrs",
        "created_at",
        "last_used_at",
    )
    view = {name: getattr(credential, name) for name in fields}
    view["secrets"] = [
        {
            "id": s.id,
            "created_at": s.created_at,
            "expires_at": s.expires_at,
            "last_used_at": s.last_used_at,
        }
        for s in credential.secrets
    ]
    return view


def _access_rule(text: str) -> dict[str, str]:
    service, _, rest = text.partition(":")
    method, _, path = rest.partition(":")
    if not (service and method and path):
        raise click.BadParameter(f"{text!r}: expected service:METHOD:/path")
    return {"service": service, "method": method, "path": path}


@click.group("app-cred")
def app_cred() -> None:
    """Application credentials (yours, or your project's application accounts')."""


@app_cred.command("create")
@click.option("--name", required=True)
@click.option("--project", required=True, help="project id or name")
@click.option("--project-domain", default="default", show_default=True)
@click.option("--user", "user_id", help="owner user id (default: you)")
@click.option("--role", "roles", multiple=True, help="a role to keep (default: all yours)")
@click.option("--expires-at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"]))
@click.option("--unrestricted", is_flag=True, help="may create further credentials")
@click.option("--access-rule", "rules", multiple=True, help="service:METHOD:/path")
@click.option("--allowed-cidr", "cidrs", multiple=True)
@click.option("--description", default="")
@token_file_option
@with_appcontext
@clean_errors
def app_cred_create(
    name: str,
    project: str,
    project_domain: str,
    user_id: str | None,
    roles: tuple[str, ...],
    expires_at: datetime | None,
    unrestricted: bool,
    rules: tuple[str, ...],
    cidrs: tuple[str, ...],
    description: str,
    token_file: str | None,
) -> None:
    """Create a credential; prints its secret once."""
    ctx = caller_context(token_file)
    assert ctx.auth is not None
    if expires_at is not None and expires_at.tzinfo is None:
        raise click.BadParameter("--expires-at needs a timezone, e.g. 2027-01-01T00:00:00Z")
    data: dict[str, Any] = {
        "name": name,
        "description": description,
        "project_id": _project_id(project, project_domain),
        "unrestricted": unrestricted,
        "expires_at": expires_at,
        "access_rules": [_access_rule(r) for r in rules],
        "allowed_cidrs": list(cidrs),
    }
    if roles:
        data["roles"] = list(roles)
    services = current_app.extensions["latchkey"]
    created = services.credentials.create(ctx, user_id or ctx.auth.user_id, data)
    view = _credential_view(created.credential)
    view.update(secret=created.secret_value, secret_id=created.secret.id)
    echo_json(view)


@app_cred.command("list")
@click.option("--user", "user_id", help="owner user id (default: you)")
@token_file_option
@with_appcontext
@clean_errors
def app_cred_list(user_id: str | None, token_file: str | None) -> None:
    """List credentials (never their secrets)."""
    ctx = caller_context(token_file)
    assert ctx.auth is not None
    found = current_app.extensions["latchkey"].credentials.list_credentials(
        ctx, user_id or ctx.auth.user_id
    )
    echo_json([_credential_view(c) for c in found])


@app_cred.command("show")
@click.argument("credential_id")
@click.option("--user", "user_id", help="owner user id (default: you)")
@token_file_option
@with_appcontext
@clean_errors
def app_cred_show(credential_id: str, user_id: str | None, token_file: str | None) -> None:
    """Show one credential and its secrets' metadata."""
    ctx = caller_context(token_file)
    assert ctx.auth is not None
    credential = current_app.extensions["latchkey"].credentials.get(
        ctx, user_id or ctx.auth.user_id, credential_id
    )
    echo_json(_credential_view(credential))


@app_cred.command("rotate")
@click.argument("credential_id")
@click.option("--user", "user_id", help="owner user id (default: you)")
@click.option(
    "--expires-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%SZ"]),
    help="expiry of the new secret",
)
@token_file_option
@with_appcontext
@clean_errors
def app_cred_rotate(
    credential_id: str, user_id: str | None, expires_at: datetime | None, token_file: str | None
) -> None:
    """Add a secret (the old ones stay valid until deleted or expired); prints it once."""
    ctx = caller_context(token_file)
    assert ctx.auth is not None
    secret, value = current_app.extensions["latchkey"].credentials.add_secret(
        ctx, user_id or ctx.auth.user_id, credential_id, expires_at
    )
    echo_json({"id": secret.id, "secret": value, "expires_at": secret.expires_at})


@app_cred.command("delete")
@click.argument("credential_id")
@click.option("--user", "user_id", help="owner user id (default: you)")
@click.option("--secret", "secret_id", help="delete only this secret of the credential")
@token_file_option
@with_appcontext
@clean_errors
def app_cred_delete(
    credential_id: str, user_id: str | None, secret_id: str | None, token_file: str | None
) -> None:
    """Delete a credential (or one of its secrets); tokens from it are revoked."""
    ctx = caller_context(token_file)
    assert ctx.auth is not None
    credentials = current_app.extensions["latchkey"].credentials
    owner = user_id or ctx.auth.user_id
    if secret_id:
        credentials.delete_secret(ctx, owner, credential_id, secret_id)
    else:
        credentials.delete(ctx, owner, credential_id)
    click.echo("deleted")


@click.group("app-account")
def app_account() -> None:
    """Application accounts: users of kind `application`, owned by a project."""


@app_account.command("create")
@click.option("--name", required=True)
@click.option("--project", required=True, help="owner project id or name")
@click.option("--domain", "domain_id", default="default", show_default=True)
@click.option("--description", default="")
@token_file_option
@with_appcontext
@clean_errors
def app_account_create(
    name: str, project: str, domain_id: str, description: str, token_file: str | None
) -> None:
    """Create an application account owned by a project."""
    ctx = caller_context(token_file)
    user = current_app.extensions["latchkey"].accounts.create_user(
        ctx,
        {
            "name": name,
            "domain_id": domain_id,
            "kind": "application",
            "owner_project_id": _project_id(project, domain_id),
            "description": description,
        },
    )
    echo_json(
        {
            "id": user.id,
            "name": user.name,
            "domain_id": user.domain_id,
            "owner_project_id": user.owner_project_id,
        }
    )


@app_account.command("list")
@click.option("--project", required=True, help="owner project id or name")
@click.option("--domain", "domain_id", default="default", show_default=True)
@token_file_option
@with_appcontext
@clean_errors
def app_account_list(project: str, domain_id: str, token_file: str | None) -> None:
    """List the application accounts a project owns."""
    ctx = caller_context(token_file)
    page = current_app.extensions["latchkey"].accounts.list_users(
        ctx,
        domain_id=None,
        name=None,
        kind=None,
        marker=None,
        limit=1000,
        owner_project_id=_project_id(project, domain_id),
    )
    echo_json([{"id": u.id, "name": u.name, "enabled": u.enabled} for u in page.items])


@app_account.command("delete")
@click.argument("user_id")
@token_file_option
@with_appcontext
@clean_errors
def app_account_delete(user_id: str, token_file: str | None) -> None:
    """Delete an application account with its credentials; its tokens are revoked."""
    ctx = caller_context(token_file)
    current_app.extensions["latchkey"].accounts.delete_user(ctx, user_id)
    click.echo("deleted")
