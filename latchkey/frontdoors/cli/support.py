"""What the token-acting commands share: the caller's token, JSON output, clean errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

import click
from flask import current_app

from latchkey.errors import LatchkeyError
from latchkey.policy.context import CallContext

F = TypeVar("F", bound=Callable[..., Any])

token_file_option = click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="file holding your token (else LATCHKEY_TOKEN)",
)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=json_default))


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def caller_context(token_file: str | None) -> CallContext:
    if token_file:
        try:
            with open(token_file) as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read {token_file}: {exc.strerror}") from exc
    else:
        token = os.environ.get("LATCHKEY_TOKEN", "")
    if not token:
        raise click.ClickException("give a token: LATCHKEY_TOKEN or --token-file")
    auth = current_app.extensions["latchkey"].tokens.authenticate_bearer(token)
    return CallContext(auth=auth, source_ip="cli")


def clean_errors(command: F) -> F:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LatchkeyError as exc:
            raise click.ClickException(f"{exc.detail} ({exc.code})") from exc

    return wrapper  # type: ignore[return-value]
