"""The audit trail of attacks on Latchkey's own API (issue 13, class 7).

Two hooks, each at the one place the event becomes an answer: a Forbidden being
rendered (native and Keystone handlers both call ``note_denial``) and a bearer
token refused by ``current_auth`` (``note_invalid_token``). Events go through
``AttackTrail`` (latchkey/audit.py): aggregated per (kind, source, subject) and
window, capped per window, and written in a transaction of their own after the
request's own one is rolled back (it fails anyway; on SQLite its write lock would
otherwise block the audit write).
"""

from __future__ import annotations

import logging

from flask import current_app, g, request

from latchkey.audit import AUTHENTICATION, AUTHORIZATION, AttackTrail, token_fingerprint
from latchkey.errors import Forbidden
from latchkey.frontdoors.http.context import client_address, services

ATTACK_TRAIL = "latchkey_attack_trail"
log = logging.getLogger(__name__)


def _trail() -> AttackTrail | None:
    trail: AttackTrail | None = current_app.extensions.get(ATTACK_TRAIL)
    return trail


def _end_request_transaction() -> None:
    services().database.session.rollback()


def _source() -> str:
    return client_address() or "unknown"


def _endpoint() -> str:
    rule = request.url_rule
    return f"{request.method} {rule.rule if rule is not None else request.path}"[:255]


def note_denial(error: Forbidden) -> None:
    """An authorization denial of Latchkey's own API (the enforcer's, access rules',
    any Forbidden answered)."""
    trail = _trail()
    if trail is None:
        return
    auth = g.get("auth")
    actor = auth.user_id if auth is not None else None
    action = str(error.extra.get("action") or "")
    source = _source()
    _end_request_transaction()
    trail.record(
        (AUTHORIZATION, source, actor or "-", action or error.code),
        type=AUTHORIZATION,
        action=action or _endpoint(),
        outcome="denied",
        actor_id=actor,
        target=None,
        request_id=g.get("request_id"),
        source_ip=source,
        details={
            "code": error.code,
            "endpoint": _endpoint(),
            **({"project_id": auth.project_id} if auth is not None and auth.project_id else {}),
            **(
                {"application_credential_id": auth.application_credential_id}
                if auth is not None and auth.application_credential_id
                else {}
            ),
            **({"rule": str(error.extra["rule"])} if error.extra.get("rule") else {}),
        },
    )


def note_invalid_token(token: str) -> None:
    """A bearer token that is forged, expired, revoked or malformed: its fingerprint
    (a short hash), never the token."""
    trail = _trail()
    if trail is None:
        return
    source = _source()
    _end_request_transaction()
    trail.record(
        (AUTHENTICATION, source, "invalid_token"),
        type=AUTHENTICATION,
        action="identity:auth:token",
        outcome="failure",
        actor_id=None,
        target=None,
        request_id=g.get("request_id"),
        source_ip=source,
        details={
            "reason": "invalid_token",
            "token_fingerprint": token_fingerprint(token),
            "endpoint": _endpoint(),
        },
    )
