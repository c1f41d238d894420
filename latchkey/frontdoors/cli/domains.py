"""`latchkey domain …`: create domains and configure their LDAP directory.

Runs the same services (and authorization) as the API, with the caller's token from
``LATCHKEY_TOKEN`` or ``--token-file``. LDAP options come from a JSON or TOML file
whose keys are Keystone's ``[ldap]`` option names (a ``[ldap]`` table is accepted).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from latchkey.frontdoors.cli.support import (
    caller_context,
    clean_errors,
    echo_json,
    token_file_option,
)
from latchkey.identity.records import DomainRecord


def _read_options(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{path} is not valid {file.suffix or 'TOML'}: {exc}") from exc
    options = data.get("ldap", data) if isinstance(data, dict) else None
    if not isinstance(options, dict):
        raise click.ClickException(f"{path} must hold a table of ldap options")
    return options


def _domain_view(domain: DomainRecord) -> dict[str, Any]:
    return {
        "id": domain.id,
        "name": domain.name,
        "enabled": domain.enabled,
        "identity_backend": domain.identity_backend,
        "ldap": domain.ldap_config,
        "ldap_password_set": domain.ldap_password_set,
    }


@click.group("domain")
def domain_group() -> None:
    """Domains and their identity backend (sql or ldap)."""


@domain_group.command("create")
@click.argument("name")
@click.option(
    "--ldap-config",
    type=click.Path(dir_okay=False),
    help="JSON/TOML file of ldap options: makes an ldap domain",
)
@click.option("--description", default="")
@token_file_option
@with_appcontext
@clean_errors
def domain_create(
    name: str, ldap_config: str | None, description: str, token_file: str | None
) -> None:
    """Create a domain; with --ldap-config the directory is tested first."""
    data: dict[str, Any] = {"name": name, "description": description}
    if ldap_config:
        data.update(identity_backend="ldap", ldap=_read_options(ldap_config))
    domain = current_app.extensions["latchkey"].directory.create_domain(
        caller_context(token_file), data
    )
    echo_json(_domain_view(domain))


@domain_group.command("set-ldap")
@click.argument("domain_id")
@click.option(
    "--ldap-config",
    type=click.Path(dir_okay=False),
    required=True,
    help="JSON/TOML file of ldap options (merged into the current ones)",
)
@token_file_option
@with_appcontext
@clean_errors
def domain_set_ldap(domain_id: str, ldap_config: str, token_file: str | None) -> None:
    """Change an ldap domain's options; the result is tested before it is saved."""
    domain = current_app.extensions["latchkey"].directory.update_domain(
        caller_context(token_file), domain_id, {"ldap": _read_options(ldap_config)}
    )
    echo_json(_domain_view(domain))


@domain_group.command("show")
@click.argument("domain_id")
@token_file_option
@with_appcontext
@clean_errors
def domain_show(domain_id: str, token_file: str | None) -> None:
    """Show a domain (never the LDAP bind password)."""
    domain = current_app.extensions["latchkey"].directory.get_domain(
        caller_context(token_file), domain_id
    )
    echo_json(_domain_view(domain))
