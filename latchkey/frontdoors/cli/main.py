"""The `latchkey` command: db upgrade, bootstrap, serve, keys, token."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from joserfc.jwk import KeySet
from sqlalchemy.exc import SQLAlchemyError

from latchkey.db import is_database_outage
from latchkey.errors import LatchkeyError
from latchkey.frontdoors.cli.credentials import app_account, app_cred
from latchkey.frontdoors.cli.domains import domain_group
from latchkey.policy.context import CallContext
from latchkey.secrets.backends.local import LocalSecretStore, without_production_warning
from latchkey.secrets.backends.master_key import KeyProtectorError, MasterKeyFile
from latchkey.secrets.system import migrate_internal, pending_legacy
from latchkey.serving import (
    SERVERS,
    _next_full_collection,  # noqa: F401 - tests/unit/test_worker_heap.py
    collect_between_requests,
    parse_bind,
    run_granian,
    settle_worker_heap,
)
from latchkey.settings import Settings, SettingsError
from latchkey.tokens.service import verify_jwt


def _create_app() -> Flask:
    """The app of a one-shot command (and of `--help`); `serve` builds its own."""
    from latchkey.app import create_app

    without_production_warning()
    try:
        return create_app()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


# What `latchkey --help` and `latchkey db --help` show (issue 15, point 7): an operator's
# commands. The extensions' developer commands (Alembic's revision, downgrade, stamp...;
# Flask-Limiter's and flask-smorest's) still run when named, unlisted.
DB_COMMANDS_SHOWN = frozenset({"upgrade", "current", "history"})
HIDDEN_COMMANDS = frozenset({"limiter", "openapi"})
# Flask's own options: the app is Latchkey's (create_app), settings come from LATCHKEY_*.
FLASK_OPTIONS_DROPPED = frozenset({"env_file", "app"})


class LatchkeyGroup(FlaskGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = [p for p in self.params if p.name not in FLASK_OPTIONS_DROPPED]
        for param in self.params:
            if param.name == "debug" and isinstance(param, click.Option):
                param.hidden = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            return None
        if cmd_name in HIDDEN_COMMANDS:
            command.hidden = True
        elif cmd_name == "db" and isinstance(command, click.Group):
            for name, sub in command.commands.items():
                sub.hidden = name not in DB_COMMANDS_SHOWN
        return command


@click.group(
    cls=LatchkeyGroup,
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
)
def main() -> None:
    """Latchkey: identity, application credentials and tenant-controlled authorization."""


def _services() -> Any:
    return current_app.extensions["latchkey"]


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc


@main.command()
@click.option(
    "--admin-password-file",
    type=click.Path(dir_okay=False),
    help="File holding the admin password (else LATCHKEY_ADMIN_PASSWORD, else "
    "a generated one, printed once).",
)
@with_appcontext
def bootstrap(admin_password_file: str | None) -> None:
    """Create the Default domain, the admin project, default roles and the admin user."""
    services = _services()
    password = (
        _read_secret_file(admin_password_file)
        if admin_password_file
        else services.settings.admin_password or None
    )
    try:
        result = services.bootstrap.run(password)
    except LatchkeyError as exc:
        raise click.ClickException(exc.detail) from exc
    for item in result.created:
        click.echo(f"created {item}")
    if not result.created:
        click.echo("already bootstrapped; nothing changed")
    if result.generated_password:
        click.echo(f"admin password (shown once): {result.generated_password}")


# Not in an app context of Flask's making (AppGroup's default): `serve` builds its
# apps itself, after it has set up the metrics directory (issue 15, points 6 and 7).
@main.command(with_appcontext=False)
@click.option("--bind", help="host:port (default: LATCHKEY_BIND)")
@click.option("--workers", type=int, help="worker processes (default: LATCHKEY_WORKERS)")
def serve(bind: str | None, workers: int | None) -> None:
    """Run the production server (gunicorn, or granian: LATCHKEY_SERVER)."""
    try:
        settings = Settings.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.server not in SERVERS:
        raise click.ClickException(
            f"setting 'server' must be one of {', '.join(SERVERS)}, not {settings.server!r}"
        )
    from latchkey import metrics as fleet_metrics

    bind = bind or settings.bind
    workers = workers or settings.workers
    if settings.server == "granian":
        try:
            parse_bind(bind)  # refused before the start-up checks, not after
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
    # Before any metric exists: every worker writes its figures to files here and
    # /metrics sums them (issue 15, point 6; docs/operators.md "Metrics").
    metrics_dir = fleet_metrics.use_multiprocess_dir()
    _check_at_start(settings)
    click.echo(f"Latchkey listening on http://{bind} ({workers} workers, {settings.server})")
    if settings.server == "granian":
        try:
            run_granian(
                settings,
                bind,
                workers,
                on_shutdown=lambda: fleet_metrics.remove_multiprocess_dir(metrics_dir),
            )
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
        return
    _run_gunicorn(settings, bind, workers, metrics_dir)


def _check_at_start(settings: Settings) -> None:
    from latchkey.app import create_app

    with create_app(settings).app_context():
        try:
            # Checked at start: a broken boundary file is refused, the one in force stays.
            current_app.extensions["latchkey"].boundaries.sync_at_start()
            # Once, before the workers start: what the Foundation sealed with the master
            # key file moves into the secret store (nothing to do on later starts).
            _migrate_internal(only_if_pending=True)
        except SQLAlchemyError as exc:
            if not is_database_outage(exc):
                raise
            # Issue 15: serve anyway; /readyz answers 503 naming the database until it
            # is reachable, and the workers connect when it is.
            click.echo(
                "the database is unreachable: serving anyway, /readyz answers 503 until it"
                " is back; the boundary file and the sealed secrets are checked at the next"
                " start",
                err=True,
            )


def _run_gunicorn(settings: Settings, bind: str, workers: int, metrics_dir: Path) -> None:
    from gunicorn.app.base import BaseApplication

    from latchkey import metrics as fleet_metrics

    options = {
        "bind": bind,
        "workers": workers,
        "threads": settings.threads,
        "keepalive": 30,  # seconds; only gthread workers keep connections open
        "accesslog": None,
        "timeout": 60,
        "post_worker_init": _settle_worker_heap,
        "post_request": _collect_between_requests,
        # Whose X-Forwarded-Proto is believed is Latchkey's decision (trusted_proxies,
        # latchkey/frontdoors/http/proxies.py), not gunicorn's default of any local peer.
        "secure_scheme_headers": {},
        "child_exit": lambda _arbiter, worker: fleet_metrics.worker_exited(worker.pid),
        "on_exit": lambda _arbiter: fleet_metrics.remove_multiprocess_dir(metrics_dir),
    }

    class LatchkeyServer(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            from latchkey.app import create_app

            return create_app(settings)

    sys.argv = sys.argv[:1]  # gunicorn must not parse our own options
    LatchkeyServer().run()


# gunicorn's post_worker_init and post_request hooks (latchkey/serving.py); gunicorn
# checks their arity (1 and 4 arguments).
_settle_worker_heap = settle_worker_heap
_collect_between_requests = collect_between_requests


@main.command("restore-fence")
@click.option(
    "--before",
    "before",
    required=True,
    help="`now`, or an ISO 8601 time with its offset (e.g. 2026-12-06T21:00:00Z): the"
    " time of the backup that was restored, or later.",
)
@with_appcontext
def restore_fence(before: str) -> None:
    """After a restore from backup: revoke every token issued before a time.

    A restored database has lost the revocations made after the backup; this one
    event revokes every token issued at or before --before, on every node and for
    relying services (the revocation feed, kind `all`). Application credentials and
    passwords keep working: clients log in again (docs/operations.md).
    """
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    if before.strip().lower() == "now":
        moment = now
    else:
        try:
            moment = datetime.fromisoformat(before.strip())
        except ValueError as exc:
            raise click.BadParameter(
                f"not an ISO 8601 time: {before!r}", param_hint="--before"
            ) from exc
        if moment.tzinfo is None:
            raise click.BadParameter(
                "give the offset (e.g. 2026-12-06T21:00:00Z): a time without one is ambiguous",
                param_hint="--before",
            )
        moment = moment.astimezone(UTC)
        if moment > now:
            raise click.BadParameter(
                "a fence in the future would revoke logins not made yet", param_hint="--before"
            )
    event = _services().tokens.restore_fence(moment)
    click.echo(
        json.dumps(
            {
                "revocation_id": event.id,
                "kind": event.kind,
                "issued_before": event.issued_before.isoformat(),
                "expires_at": event.expires_at.isoformat(),
            },
            indent=2,
        )
    )


@main.group()
def keys() -> None:
    """Token signing keys."""


@keys.command("list")
@with_appcontext
def keys_list() -> None:
    """Show the key ring."""
    click.echo(json.dumps(_services().keys.describe(), indent=2))


@keys.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """Promote the staged key, demote the primary, retire expired secondaries.

    The new key is written to the secret store first; if the store does not answer,
    nothing changes.
    """
    try:
        changes = _services().keys.rotate()
    except LatchkeyError as exc:
        raise click.ClickException(f"{exc.detail} ({exc.code}); nothing changed") from exc
    click.echo(json.dumps(changes, indent=2))


@keys.command("retire")
@click.argument("kid")
@with_appcontext
def keys_retire(kid: str) -> None:
    """Retire one key now: tokens it signed stop validating."""
    try:
        _services().keys.retire(kid)
    except LatchkeyError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"retired {kid}")


@main.group()
def token() -> None:
    """Issue and verify tokens."""


@token.command("issue")
@click.option("--user", "user_name", required=True)
@click.option("--user-domain", default="default", show_default=True, help="domain id")
@click.option("--project", help="project name to scope to")
@click.option("--project-domain", default="default", show_default=True, help="domain id")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="file holding the password (else LATCHKEY_PASSWORD, else a prompt)",
)
@with_appcontext
def token_issue(
    user_name: str,
    user_domain: str,
    project: str | None,
    project_domain: str,
    password_file: str | None,
) -> None:
    """Authenticate with a password and print a token."""
    password = (
        _read_secret_file(password_file)
        if password_file
        else os.environ.get("LATCHKEY_PASSWORD") or click.prompt("Password", hide_input=True)
    )
    scope = {"project": {"name": project, "domain": {"id": project_domain}}} if project else None
    try:
        issued = _services().authentication.password(
            CallContext(auth=None, source_ip="cli"),
            {"name": user_name, "domain": {"id": user_domain}},
            password,
            scope,
        )
    except LatchkeyError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(issued.token)


@token.command("verify", with_appcontext=False)
@click.argument("token_text", metavar="TOKEN")
@click.option(
    "--jwks-url",
    help="verify offline against this JWKS, as a relying service "
    "does (signature and claims; revocation is not checked)",
)
@click.option(
    "--issuer",
    help="expected issuer (default: the JWKS URL's origin offline, this deployment's online)",
)
@click.option("--audience", help="expected audience (default: this deployment's)")
def token_verify(
    token_text: str, jwks_url: str | None, issuer: str | None, audience: str | None
) -> None:
    """Validate a token and print its claims: online (database) or offline (JWKS)."""
    try:
        settings = Settings.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if jwks_url:
            key_set = KeySet.import_key_set(_fetch_json(jwks_url))
            claims = verify_jwt(
                token_text,
                lambda _kid: key_set,
                issuer or _origin(jwks_url),
                audience or settings.token_audience,
            )
        else:
            app = _create_app()
            with app.app_context():
                claims = app.extensions["latchkey"].tokens.validate(token_text)
    except LatchkeyError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(json.dumps(claims, indent=2, sort_keys=True))


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _fetch_json(url: str) -> Any:
    if not url.startswith(("http://", "https://")):
        raise click.ClickException("the JWKS URL must be http(s)")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - scheme checked
            return json.load(response)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot fetch {url}: {exc}") from exc


@main.command("settings", with_appcontext=False)
def show_settings() -> None:
    """List every setting with its environment variable, default and help."""
    for env, type_name, default, help_text in Settings.describe():
        click.echo(f"{env} ({type_name}, default {default!r})\n    {help_text}")


main.add_command(app_cred)
main.add_command(app_account)
main.add_command(domain_group)


@main.group("secrets")
def secrets_group() -> None:
    """Latchkey's own secrets and the embedded secret store's master key."""


@secrets_group.command("migrate-internal")
@with_appcontext
def secrets_migrate_internal() -> None:
    """Move signing keys, pepper versions and LDAP bind passwords sealed by the master key
    file into the configured secret store. Idempotent; `serve` runs it at start."""
    moved = _migrate_internal(only_if_pending=False)
    if not moved:
        click.echo("nothing sealed by the master key file; nothing to move")
    for label, count in moved.items():
        click.echo(f"moved {count} {label} into the {_services().secret_store.name} store")


def _migrate_internal(only_if_pending: bool) -> dict[str, int]:
    services = _services()
    holders = (services.keys, services.peppers, services.ldap)
    if only_if_pending and not pending_legacy(holders):
        return {}
    key_file = services.settings.home_path / "master.key"
    try:
        moved = migrate_internal(holders, MasterKeyFile.existing(key_file), str(key_file))
        services.peppers.ensure()  # a database from before any credential had none
    except LatchkeyError as exc:
        raise click.ClickException(
            f"{exc.detail} ({exc.code}); what was moved stays moved, run it again"
        ) from exc
    except KeyProtectorError as exc:
        raise click.ClickException(f"cannot open what {key_file} sealed: {exc}") from exc
    return moved


@secrets_group.command("rotate-pepper")
@with_appcontext
def secrets_rotate_pepper() -> None:
    """Add a random credential pepper version, used for new application-credential
    secrets from now on; existing secrets keep verifying with their own version."""
    try:
        version = _services().peppers.rotate()
    except LatchkeyError as exc:
        raise click.ClickException(f"{exc.detail} ({exc.code}); nothing changed") from exc
    click.echo(f"credential pepper version {version} is now current")


@secrets_group.command("rotate-master")
@with_appcontext
def secrets_rotate_master() -> None:
    """Add a master key version; new secrets use it. Run `rewrap` for the old ones."""
    version = _local_store().rotate_master()
    click.echo(f"master key version {version} is now current; run `latchkey secrets rewrap`")


@secrets_group.command("rewrap")
@with_appcontext
def secrets_rewrap() -> None:
    """Re-seal every secret's data key with the current master key."""
    store = _local_store()
    total = store.count()
    with click.progressbar(length=total, label="rewrapping", file=sys.stderr) as bar:
        done = store.rewrap(progress=bar.update)
    click.echo(
        f"rewrapped {done} of {total} secret versions; "
        f"{store.stale_count()} still under an older master key"
    )


def _local_store() -> LocalSecretStore:
    store = _services().secret_store
    if not isinstance(store, LocalSecretStore):
        raise click.ClickException(f"the {store.name} secret store has no master key to manage")
    return store


@main.group()
def policy() -> None:
    """Authorization policy: the operator boundary."""


@policy.group("boundary")
def boundary_group() -> None:
    """The operator boundary (Polar)."""


@boundary_group.command("load")
@click.argument("path", required=False)
@with_appcontext
def boundary_load(path: str | None) -> None:
    """Check a boundary file and put it in force (default: LATCHKEY_POLICY_BOUNDARY_FILE).

    A file that does not load is refused and the boundary in force stays.
    """
    from latchkey.policy.engine import PolicyError

    try:
        _changed, message = _services().boundaries.load_file(path)
    except PolicyError as exc:
        raise click.ClickException(f"refused, the boundary in force stays: {exc}") from exc
    click.echo(message)


@boundary_group.command("show")
@with_appcontext
def boundary_show() -> None:
    """Print the boundary in force."""
    text, fingerprint = _services().boundaries.current()
    click.echo(f"# in force: {fingerprint}\n{text}")
