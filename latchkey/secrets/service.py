"""Tenant secrets: metadata in Latchkey's database, payloads only in the secret store.

Every operation is a policy action on a ``secrets:secret`` resource whose
attributes include its ``name``, decided by the same engine as everything else
(boundary, then the project's tenant rules) — so a tenant can let exactly one
application account read exactly one credential.

Nothing is half-written: a payload the store refused leaves no metadata row
(the transaction is rolled back), and a payload the store accepted whose
metadata then cannot be committed is removed from the store again (the whole
secret for a new one, that version for a new version). Database failures are
problems too: a uniqueness race is 409, anything else 503
``database_unavailable``.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from latchkey.audit import CHANGE, DECISION, AuditLog, AuditTarget
from latchkey.db import DbSession, utcnow
from latchkey.errors import (
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from latchkey.policy.context import CallContext
from latchkey.policy.decisions import Decisions
from latchkey.policy.plan import CONDITIONAL, NEVER, to_sql
from latchkey.secrets.backends import SecretStore
from latchkey.secrets.models import TenantSecret, TenantSecretVersion
from latchkey.secrets.records import TenantSecretRecord

log = logging.getLogger(__name__)

RESOURCE_TYPE = "secrets:secret"
MAX_PAYLOAD = 65_536


class TenantSecrets:
    def __init__(
        self, session: DbSession, store: SecretStore, decisions: Decisions, audit: AuditLog
    ) -> None:
        self._session = session
        self._store = store
        self._decisions = decisions
        self._audit = audit

    def create(self, ctx: CallContext, project_id: str, data: dict[str, Any]) -> TenantSecretRecord:
        self._require(ctx, "secrets:secret:create", project_id, None, data["name"])
        if self._session.scalar(
            select(TenantSecret.id).where(
                TenantSecret.project_id == project_id, TenantSecret.name == data["name"]
            )
        ):
            raise Conflict(f"a secret named {data['name']!r} exists", code="secret_name_taken")
        payload = _payload(data["payload"])
        secret = TenantSecret(
            project_id=project_id,
            name=data["name"],
            description=data.get("description", ""),
            content_type=data.get("content_type", "text/plain"),
            store=self._store.name,
            created_by=ctx.actor_id,
        )
        self._session.add(secret)
        try:
            self._session.flush()
        except SQLAlchemyError as exc:
            self._session.rollback()
            raise _database_error(exc, "secret_name_taken") from exc
        new_secret_id = secret.id  # read now: a failed commit leaves the object unusable
        try:
            reference = self._store.put(project_id, new_secret_id, 1, payload)
        except Exception:
            self._session.rollback()  # no metadata row without its payload
            raise
        try:
            self._session.add(
                TenantSecretVersion(
                    secret_id=new_secret_id,
                    version=1,
                    reference=reference,
                    created_by=ctx.actor_id,
                )
            )
            self._record(ctx, CHANGE, "secrets:secret:create", secret)
            self._session.commit()
        except SQLAlchemyError as exc:
            self._abandon(project_id, new_secret_id, 1, reference)
            raise _database_error(exc, "secret_name_taken") from exc
        return TenantSecretRecord.of(secret)

    def list_secrets(self, ctx: CallContext, project_id: str) -> list[TenantSecretRecord]:
        """The secrets the caller may list, filtered in SQL with the policy's plan."""
        kind, condition = self._decisions.plan(
            ctx, "secrets:secret:list", RESOURCE_TYPE, project_id, None
        )
        if kind == NEVER:
            raise Forbidden(
                "not allowed to perform secrets:secret:list",
                code="policy_denied",
                extra={"action": "secrets:secret:list"},
            )
        query = select(TenantSecret).where(TenantSecret.project_id == project_id)
        if kind == CONDITIONAL:
            query = query.where(to_sql(condition, {"name": TenantSecret.name}))
        secrets = self._session.scalars(query.order_by(TenantSecret.name))
        return [TenantSecretRecord.of(secret) for secret in secrets]

    def get(self, ctx: CallContext, project_id: str, secret_id: str) -> TenantSecretRecord:
        return TenantSecretRecord.of(
            self._enforced(ctx, "secrets:secret:read", project_id, secret_id)
        )

    def payload(
        self, ctx: CallContext, project_id: str, secret_id: str, version: int | None
    ) -> tuple[TenantSecretRecord, int, bytes]:
        secret = self._enforced(ctx, "secrets:secret:read", project_id, secret_id)
        wanted = version or secret.current_version
        row = self._session.scalar(
            select(TenantSecretVersion).where(
                TenantSecretVersion.secret_id == secret.id, TenantSecretVersion.version == wanted
            )
        )
        if row is None:
            raise NotFound(f"no version {wanted}", code="secret_version_not_found")
        payload = self._store.get(project_id, secret.id, wanted, row.reference)
        self._record(ctx, DECISION, "secrets:secret:read", secret, version=wanted)
        self._session.commit()
        return TenantSecretRecord.of(secret), wanted, payload

    def new_version(
        self, ctx: CallContext, project_id: str, secret_id: str, data: dict[str, Any]
    ) -> TenantSecretRecord:
        secret = self._enforced(ctx, "secrets:secret:update", project_id, secret_id)
        payload = _payload(data["payload"])
        version = secret.current_version + 1
        try:
            reference = self._store.put(project_id, secret.id, version, payload)
        except Exception:
            self._session.rollback()
            raise
        try:
            self._session.add(
                TenantSecretVersion(
                    secret_id=secret.id,
                    version=version,
                    reference=reference,
                    created_by=ctx.actor_id,
                )
            )
            secret.current_version, secret.updated_at = version, utcnow()
            self._record(ctx, CHANGE, "secrets:secret:update", secret, version=version)
            self._session.commit()
        except SQLAlchemyError as exc:
            self._abandon(project_id, secret_id, version, reference)
            raise _database_error(exc, "secret_version_conflict") from exc
        return TenantSecretRecord.of(secret)

    def delete(self, ctx: CallContext, project_id: str, secret_id: str) -> None:
        secret = self._enforced(ctx, "secrets:secret:delete", project_id, secret_id)
        # Store first: should the commit fail, reads answer secret_payload_missing and
        # a repeated DELETE finishes the job, rather than a payload nobody can reach.
        self._store.delete(project_id, secret.id)
        try:
            self._session.delete(secret)
            self._record(ctx, CHANGE, "secrets:secret:delete", secret)
            self._session.commit()
        except SQLAlchemyError as exc:
            self._session.rollback()
            raise _database_error(exc, "secret_version_conflict") from exc

    def versions(self, secret_id: str) -> list[TenantSecretVersion]:
        return list(
            self._session.scalars(
                select(TenantSecretVersion)
                .where(TenantSecretVersion.secret_id == secret_id)
                .order_by(TenantSecretVersion.version)
            )
        )

    # -- helpers ----------------------------------------------------------------------

    def _abandon(self, project_id: str, secret_id: str, version: int, reference: str) -> None:
        """The metadata did not commit: take the payload the store accepted back out."""
        self._session.rollback()
        try:
            if version == 1:
                self._store.delete(project_id, secret_id)  # the secret never existed
            else:
                delete_version = getattr(self._store, "delete_version", None)
                if delete_version is not None:
                    delete_version(project_id, secret_id, version, reference)
        except Exception as exc:  # the database error is the one to report
            log.warning(
                "a payload written to the secret store could not be removed after the "
                "database refused its metadata",
                extra={
                    "store": self._store.name,
                    "reference": reference,
                    "error": type(exc).__name__,
                },
            )
        finally:
            self._session.rollback()  # embedded store: its delete ran in the session

    def _enforced(
        self, ctx: CallContext, action: str, project_id: str, secret_id: str
    ) -> TenantSecret:
        secret = self._session.get(TenantSecret, secret_id)
        if secret is not None and secret.project_id != project_id:
            secret = None  # another project's secret does not exist here
        # Decided before revealing existence; an unknown secret has no name, so a
        # rule about names never allows it (deny rules fail closed on it).
        self._require(ctx, action, project_id, secret_id, secret.name if secret else None)
        if secret is None:
            raise NotFound(f"no secret {secret_id!r} in this project", code="secret_not_found")
        return secret

    def _require(
        self,
        ctx: CallContext,
        action: str,
        project_id: str,
        secret_id: str | None,
        name: str | None,
    ) -> None:
        # An unknown project is refused by the boundary like any project not the caller's.
        decision = self._decisions.decide(ctx, action, _resource(project_id, secret_id, name))
        if not decision.allowed:
            raise Forbidden(
                f"not allowed to perform {action}",
                code="policy_denied",
                extra={
                    "action": action,
                    "decided_by": decision.decided_by,
                    **({"rule": decision.rule} if decision.rule else {}),
                },
            )

    def _record(
        self, ctx: CallContext, kind: str, action: str, secret: TenantSecret, **details: Any
    ) -> None:
        self._audit.add(
            type=kind,
            action=action,
            outcome="success",
            actor_id=ctx.actor_id,
            target=AuditTarget("secret", secret.id, project_id=secret.project_id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"name": secret.name, **details},
        )


def _database_error(exc: SQLAlchemyError, conflict_code: str) -> Exception:
    if isinstance(exc, IntegrityError):
        return Conflict("a concurrent change won; try again", code=conflict_code)
    # The class name only: driver messages may contain the connection URL.
    log.warning("the database refused a secret change", extra={"error": type(exc).__name__})
    return DatabaseUnavailable("the database did not accept the change")  # with Retry-After


def _resource(project_id: str, secret_id: str | None, name: str | None) -> dict[str, Any]:
    attributes = {"name": name} if name is not None else {}
    return {
        "type": RESOURCE_TYPE,
        "project_id": project_id,
        "id": secret_id,
        "attributes": attributes,
    }


def _payload(text: str) -> bytes:
    payload = text.encode("utf-8")
    if not payload:  # Barbican refuses empty payloads: no store keeps one
        raise InvalidRequest("a payload holds at least one byte", code="payload_empty")
    if len(payload) > MAX_PAYLOAD:
        raise InvalidRequest(
            f"a payload holds at most {MAX_PAYLOAD} bytes", code="payload_too_large"
        )
    return payload
