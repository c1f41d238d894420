"""Keystone's credentials (``/v3/credentials``, OS-EC2) and the tokens EC2 keys buy.

A credential is a user's opaque ``blob`` of some ``type``; for ``ec2`` the blob is a
JSON string with ``access`` and ``secret``, and the id is the sha256 hex of the
access key, as Keystone computes it. The blob is a secret: sealed with AES-256-GCM
under a data key kept in the configured secret store
(``keystone-credential-key-<8 hex>``, created at first use), bound to the
credential's id, never logged or audited.

A user manages their own credentials, cloud admins everyone's
(``identity:credential:*``). Restricted application credentials may not touch
them at all: reading an EC2 secret would buy an unrestricted token.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from latchkey.audit import AUTHENTICATION, AuditTarget
from latchkey.credentials.models import KeystoneCredential, OAuth1Consumer
from latchkey.credentials.records import (
    CreatedConsumer,
    OAuth1ConsumerRecord,
    OpenCredential,
    ec2_blob,
)
from latchkey.db import utcnow
from latchkey.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)
from latchkey.identity.accounts import APPLICATION
from latchkey.identity.backends import IdentityBackends
from latchkey.identity.common import IdentityServiceBase, ServiceDeps
from latchkey.identity.models import Domain, Project, User
from latchkey.identity.roles import Roles
from latchkey.policy.context import CallContext
from latchkey.policy.enforcer import Target
from latchkey.secrets.system import SystemSecrets
from latchkey.tokens import ec2 as ec2_signatures
from latchkey.tokens.service import IssuedToken, Scope, Tokens

EC2 = "ec2"
DATA_KEY_PREFIX = "keystone-credential-key-"  # + 8 hex digits: a data key's name
SEALED_PREFIX = b"kc1"
EC2_METHOD = "ec2credential"
MAX_BLOB = 65536
MAX_TYPE = 255

CREATE = "identity:credential:create"
LIST = "identity:credential:list"
GET = "identity:credential:get"
UPDATE = "identity:credential:update"
DELETE = "identity:credential:delete"


def access_id(access: str) -> str:
    """A credential's id from its EC2 access key, as Keystone derives it."""
    return hashlib.sha256(access.encode()).hexdigest()


@dataclass(frozen=True)
class _OpenedRow:
    """A credential's row with its blob opened, for checking a signature."""

    row: KeystoneCredential
    blob: str

    def ec2(self) -> dict[str, Any]:
        return ec2_blob(self.blob)


class CredentialSealer:
    """AES-256-GCM under data keys from the secret store, read once and held.

    Each sealed value names its key (``keystone-credential-key-<8 hex>``). The first
    use makes one and commits it at once, before anything is sealed with it; two
    workers doing so together make two keys, both kept and both readable. The oldest
    registered key seals from then on.
    """

    def __init__(self, system: SystemSecrets) -> None:
        self._system = system
        self._keys: dict[str, bytes] = {}
        self._current: str | None = None
        self._lock = threading.Lock()

    def _current_key(self) -> tuple[str, bytes]:
        with self._lock:
            # Checked at each seal (writes only): a key whose registry row is gone (a
            # restored database) must not seal what no one could open afterwards.
            if self._current is None or not self._system.has(self._current):
                entries = self._system.entries(DATA_KEY_PREFIX)
                if entries:
                    self._current = entries[0].name
                else:
                    name = DATA_KEY_PREFIX + secrets.token_hex(4)
                    key = AESGCM.generate_key(bit_length=256)
                    self._system.put(name, key)
                    self._system.session.commit()  # before anything is sealed with it
                    self._keys[name] = key
                    self._current = name
            name = self._current
        return name, self._key(name)

    def _key(self, name: str) -> bytes:
        key = self._keys.get(name)
        if key is None:
            key = self._system.get(name)
            with self._lock:
                self._keys[name] = key
        return key

    def seal(self, value: str, context: str) -> bytes:
        name, key = self._current_key()
        suffix = name.removeprefix(DATA_KEY_PREFIX).encode()
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, value.encode(), context.encode())
        return SEALED_PREFIX + bytes([len(suffix)]) + suffix + nonce + sealed

    def open(self, sealed: bytes, context: str) -> str:
        if not sealed.startswith(SEALED_PREFIX) or len(sealed) < len(SEALED_PREFIX) + 14:
            raise ServiceUnavailable(
                "a sealed credential is in an unknown format", code="credential_blob_unreadable"
            )
        rest = sealed[len(SEALED_PREFIX) :]
        suffix, body = rest[1 : 1 + rest[0]], rest[1 + rest[0] :]
        if not re.fullmatch(rb"[0-9a-f]{8}", suffix):
            raise ServiceUnavailable(
                "a sealed credential names no data key", code="credential_blob_unreadable"
            )
        key = self._key(DATA_KEY_PREFIX + suffix.decode("ascii", "replace"))
        try:
            plain = AESGCM(key).decrypt(body[:12], body[12:], context.encode())
        except InvalidTag as exc:
            raise ServiceUnavailable(
                "a sealed credential does not open with its data key",
                code="credential_blob_unreadable",
            ) from exc
        return plain.decode()


class KeystoneCredentials(IdentityServiceBase):
    def __init__(
        self,
        deps: ServiceDeps,
        *,
        system: SystemSecrets,
        roles: Roles,
        tokens: Tokens,
        backends: IdentityBackends,
    ) -> None:
        super().__init__(deps)
        self.sealer = CredentialSealer(system)
        self._roles = roles
        self._tokens = tokens
        self._backends = backends

    # -- policy ----------------------------------------------------------------------

    def _enforce_owner(self, ctx: CallContext, action: str, owner_id: str) -> User:
        """Oneself, or a cloud admin; enforced before revealing whether the owner exists.
        Restricted application credentials are refused every action here."""
        if ctx.auth is not None:
            # Before the owner is looked up (RESTRICTED_NEVER: reads included).
            self._enforcer.refuse_restricted(ctx.auth, action)
        owner = self._session.get(User, owner_id)
        target = Target(
            user_id=owner_id,
            domain_id=owner.domain_id if owner else None,
            privileged=owner is not None and self._is_cloud_operator(owner.id),
        )
        self._enforce(ctx, action, target)
        if owner is None:
            raise NotFound(f"Could not find user: {owner_id}.", code="user_not_found")
        return owner

    # -- CRUD ------------------------------------------------------------------------

    def create(
        self,
        ctx: CallContext,
        user_id: str,
        type_: str,
        blob: Any,
        project_id: str | None,
    ) -> OpenCredential:
        self._enforce_owner(ctx, CREATE, user_id)
        type_, blob = _check_type_and_blob(type_, blob)
        if project_id is not None:
            self._project(project_id)
        if type_ == EC2:
            access = _ec2_blob(blob, project_id)["access"]
            credential_id = access_id(access)
        else:
            credential_id = secrets.token_hex(16)
        if self._session.get(KeystoneCredential, credential_id) is not None:
            raise Conflict("Duplicate entry found with id " + credential_id, code="conflict")
        row = KeystoneCredential(
            id=credential_id,
            user_id=user_id,
            project_id=project_id,
            type=type_,
            blob_sealed=self.sealer.seal(blob, credential_id),
            created_at=utcnow(),
        )
        self._session.add(row)
        self._record_change(ctx, CREATE, _audit_target(row), type=type_)
        self._commit("credential_exists", "Duplicate entry found with id " + credential_id)
        return OpenCredential.of(row, blob)

    def create_ec2(self, ctx: CallContext, user_id: str, project_id: str) -> OpenCredential:
        blob = json.dumps(
            {"access": secrets.token_hex(16), "secret": secrets.token_hex(16), "trust_id": None}
        )
        return self.create(ctx, user_id, EC2, blob, project_id)

    def list(
        self, ctx: CallContext, user_id: str | None = None, type_: str | None = None
    ) -> list[OpenCredential]:
        auth = ctx.auth
        # Whoever may list credentials with no owner named sees everyone's (the enforcer's
        # rule: a cloud admin); anyone else sees their own, as Keystone filters them.
        every_user = auth is not None and self._enforcer.allowed(auth, LIST, Target())
        if user_id is not None or not every_user:
            assert auth is not None
            # Anyone else sees their own credentials only (as Keystone filters them).
            user_id = user_id or auth.user_id
            self._enforce_owner(ctx, LIST, user_id)
        else:
            self._enforce(ctx, LIST, Target())
        query = select(KeystoneCredential)
        if user_id is not None:
            query = query.where(KeystoneCredential.user_id == user_id)
        if type_ is not None:
            query = query.where(KeystoneCredential.type == type_)
        rows = self._session.scalars(query.order_by(KeystoneCredential.id))
        return [OpenCredential.of(r, self.sealer.open(r.blob_sealed, r.id)) for r in rows]

    def get(self, ctx: CallContext, credential_id: str) -> OpenCredential:
        row = self._visible(ctx, GET, credential_id)
        return OpenCredential.of(row, self.sealer.open(row.blob_sealed, row.id))

    def update(self, ctx: CallContext, credential_id: str, data: dict[str, Any]) -> OpenCredential:
        row = self._visible(ctx, UPDATE, credential_id)
        if "user_id" in data and data["user_id"] != row.user_id:
            raise InvalidRequest("a credential's user_id cannot be changed")
        blob = self.sealer.open(row.blob_sealed, row.id)
        type_ = data.get("type", row.type)
        blob = data.get("blob", blob)
        type_, blob = _check_type_and_blob(type_, blob)
        project_id = data.get("project_id", row.project_id)
        if project_id is not None and not isinstance(project_id, str):
            raise InvalidRequest("project_id must be a string")
        if project_id is not None and project_id != row.project_id:
            self._project(project_id)
        if type_ == EC2:
            _ec2_blob(blob, project_id)
        row.type, row.project_id = type_, project_id
        row.blob_sealed = self.sealer.seal(blob, row.id)
        self._record_change(ctx, UPDATE, _audit_target(row), fields=sorted(data))
        self._commit("credential_conflict", "the credential changed meanwhile")
        return OpenCredential.of(row, blob)

    def delete(self, ctx: CallContext, credential_id: str) -> None:
        row = self._visible(ctx, DELETE, credential_id)
        self._session.delete(row)
        self._record_change(ctx, DELETE, _audit_target(row), type=row.type)
        self._session.commit()

    def get_ec2(self, ctx: CallContext, user_id: str, access: str) -> OpenCredential:
        self._enforce_owner(ctx, GET, user_id)
        row = self._session.get(KeystoneCredential, access_id(access))
        if row is None or row.user_id != user_id or row.type != EC2:
            raise NotFound("Could not find credential: " + access_id(access) + ".")
        return OpenCredential.of(row, self.sealer.open(row.blob_sealed, row.id))

    def delete_ec2(self, ctx: CallContext, user_id: str, access: str) -> None:
        self.get_ec2(ctx, user_id, access)
        self.delete(ctx, access_id(access))

    def _visible(self, ctx: CallContext, action: str, credential_id: str) -> KeystoneCredential:
        """The credential, if the caller may act on it; a foreign one is a 404, so the
        answer never says whether someone else's credential exists."""
        auth = ctx.auth
        if auth is None:
            self._enforce(ctx, action, Target())  # 401
        row = self._session.get(KeystoneCredential, credential_id)
        if row is None:
            raise NotFound(f"Could not find credential: {credential_id}.")
        try:
            self._enforce_owner(ctx, action, row.user_id)
        except Forbidden:
            assert auth is not None
            if auth.restricted:
                raise
            raise NotFound(f"Could not find credential: {credential_id}.") from None
        return row

    def _project(self, project_id: str) -> Project:
        project = self._session.get(Project, project_id)
        if project is None:
            raise NotFound(f"Could not find project: {project_id}.", code="project_not_found")
        return project

    # -- tokens for EC2 keys ---------------------------------------------------------

    def ec2_token(self, ctx: CallContext, credentials: dict[str, Any]) -> IssuedToken:
        """``/v3/ec2tokens``: a project-scoped token for a request signed with an EC2 key."""
        found = self._ec2_credential(ctx, credentials.get("access"), "ec2tokens")
        secret = found.ec2().get("secret")
        now = utcnow()
        host = credentials.get("host")
        # As signed, else as AWS describes it (lower case), else without the port
        # (some clients sign without it; Keystone tries again without it).
        hosts: list[Any] = [host]
        if isinstance(host, str):
            for variant in (host.lower(), host.rsplit(":", 1)[0], host.lower().rsplit(":", 1)[0]):
                if variant not in hosts:
                    hosts.append(variant)
        good = False
        try:
            for candidate in hosts:
                expected = ec2_signatures.ec2_signature(
                    str(secret), {**credentials, "host": candidate}, now
                )
                good = ec2_signatures.matches(expected, credentials.get("signature")) or good
        except ec2_signatures.SignatureRejected as exc:
            self._fail(ctx, "ec2tokens", str(exc), found.row)
        if not good:
            self._fail(ctx, "ec2tokens", "signature_mismatch", found.row)
        return self._issue(ctx, found.row, "ec2tokens")

    def s3_token(self, ctx: CallContext, credentials: dict[str, Any]) -> IssuedToken:
        """``/v3/s3tokens``: the same, for the string to sign swift's s3token sends."""
        found = self._ec2_credential(ctx, credentials.get("access"), "s3tokens")
        token = credentials.get("token")
        if not isinstance(token, str):
            self._fail(ctx, "s3tokens", "no_string_to_sign", found.row)
        try:
            expected = ec2_signatures.s3_signature(str(found.ec2().get("secret")), token, utcnow())
        except ec2_signatures.SignatureRejected as exc:
            self._fail(ctx, "s3tokens", str(exc), found.row)
        if not ec2_signatures.matches(expected, credentials.get("signature")):
            self._fail(ctx, "s3tokens", "signature_mismatch", found.row)
        return self._issue(ctx, found.row, "s3tokens")

    def _ec2_credential(self, ctx: CallContext, access: Any, door: str) -> _OpenedRow:
        if not isinstance(access, str) or not access or len(access) > 1024:
            self._fail(ctx, door, "no_access_key")
        row = self._session.get(KeystoneCredential, access_id(access))
        if row is None or row.type != EC2:
            self._fail(ctx, door, "unknown_access_key")
        found = _OpenedRow(row, self.sealer.open(row.blob_sealed, row.id))
        # The blob's own access key (a PATCH may have changed it since the id was made).
        if not ec2_signatures.matches(str(found.ec2().get("access")), access):
            self._fail(ctx, door, "unknown_access_key", row)
        return found

    def _issue(self, ctx: CallContext, row: KeystoneCredential, door: str) -> IssuedToken:
        user = self._session.get(User, row.user_id)
        domain = self._session.get(Domain, user.domain_id) if user else None
        project = self._session.get(Project, row.project_id) if row.project_id else None
        project_domain = self._session.get(Domain, project.domain_id) if project else None
        if (
            user is None
            or domain is None
            or project is None
            or project_domain is None
            or not (user.enabled and domain.enabled and project.enabled and project_domain.enabled)
            or user.kind == APPLICATION
        ):
            self._fail(ctx, door, "user_or_project_unavailable", row)
        state = self._backends.of(domain).recheck(domain, user)
        if not (state.exists and state.enabled):
            self._fail(ctx, door, "user_unavailable", row)
        group_ids = state.group_ids
        roles = self._roles.effective_role_names(
            user.id, project_id=project.id, directory_group_ids=group_ids
        )
        if not roles:
            self._fail(ctx, door, "no_roles_on_project", row)
        issued = self._tokens.issue(
            user,
            domain,
            Scope(project=project, project_domain=project_domain),
            roles,
            [EC2_METHOD],
        )
        self._audit.add(
            type=AUTHENTICATION,
            action=f"identity:auth:{EC2_METHOD}",
            outcome="success",
            actor_id=user.id,
            target=AuditTarget("user", user.id, project_id=project.id),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={"method": EC2_METHOD, "door": door, "credential_id": row.id},
        )
        self._session.commit()
        return issued

    def _fail(
        self, ctx: CallContext, door: str, reason: str, row: KeystoneCredential | None = None
    ) -> NoReturn:
        self._audit.add(
            type=AUTHENTICATION,
            action=f"identity:auth:{EC2_METHOD}",
            outcome="failure",
            actor_id=row.user_id if row else None,
            target=AuditTarget("user", row.user_id if row else None),
            request_id=ctx.request_id,
            source_ip=ctx.source_ip,
            details={
                "method": EC2_METHOD,
                "door": door,
                "reason": reason[:200],
                **({"credential_id": row.id} if row else {}),
            },
        )
        self._session.commit()
        raise AuthenticationFailed("The request you have made requires authentication.")


def _audit_target(row: KeystoneCredential) -> AuditTarget:
    return AuditTarget("credential", row.id, project_id=row.project_id)


def _check_type_and_blob(type_: Any, blob: Any) -> tuple[str, str]:
    if not isinstance(type_, str) or not type_ or len(type_) > MAX_TYPE:
        raise InvalidRequest("type must be a non-empty string of at most 255 characters")
    if not isinstance(blob, str) or not blob:
        raise InvalidRequest("blob must be a non-empty string")
    if len(blob) > MAX_BLOB:
        raise InvalidRequest("blob is too long")
    return type_, blob


def _ec2_blob(blob: str, project_id: str | None) -> dict[str, Any]:
    try:
        value = json.loads(blob)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("access"), str):
        raise InvalidRequest("Invalid blob in credential")
    if not value["access"] or not isinstance(value.get("secret"), str) or not value["secret"]:
        raise InvalidRequest("Invalid blob in credential")
    if project_id is None:
        raise InvalidRequest("Missing project_id in ec2 credential")
    return value


# -- OS-OAUTH1 consumers ------------------------------------------------------------------

CONSUMER_CREATE = "identity:oauth1_consumer:create"
CONSUMER_LIST = "identity:oauth1_consumer:list"
CONSUMER_GET = "identity:oauth1_consumer:get"
CONSUMER_UPDATE = "identity:oauth1_consumer:update"
CONSUMER_DELETE = "identity:oauth1_consumer:delete"
CONSUMER_CONTEXT = "oauth1-consumer:"  # the sealed secret is bound to the consumer's id


class OAuth1Consumers(IdentityServiceBase):
    """Keystone's OS-OAUTH1 consumers, managed by cloud admins."""

    def __init__(self, deps: ServiceDeps, *, sealer: CredentialSealer) -> None:
        super().__init__(deps)
        self._sealer = sealer

    def create(self, ctx: CallContext, description: str | None) -> CreatedConsumer:
        self._enforce(ctx, CONSUMER_CREATE, Target())
        secret = secrets.token_urlsafe(32)
        consumer_id = secrets.token_hex(16)
        consumer = OAuth1Consumer(
            id=consumer_id,
            description=_description(description),
            secret_sealed=self._sealer.seal(secret, CONSUMER_CONTEXT + consumer_id),
            created_at=utcnow(),
        )
        self._session.add(consumer)
        self._record_change(ctx, CONSUMER_CREATE, AuditTarget("oauth1_consumer", consumer_id))
        self._commit("consumer_exists", "a consumer with that id exists")
        return CreatedConsumer(OAuth1ConsumerRecord.of(consumer), secret)

    def list(self, ctx: CallContext) -> list[OAuth1ConsumerRecord]:
        self._enforce(ctx, CONSUMER_LIST, Target())
        consumers = self._session.scalars(select(OAuth1Consumer).order_by(OAuth1Consumer.id))
        return [OAuth1ConsumerRecord.of(consumer) for consumer in consumers]

    def get(self, ctx: CallContext, consumer_id: str) -> OAuth1ConsumerRecord:
        self._enforce(ctx, CONSUMER_GET, Target())
        return OAuth1ConsumerRecord.of(self._found(consumer_id))

    def update(self, ctx: CallContext, consumer_id: str, description: Any) -> OAuth1ConsumerRecord:
        self._enforce(ctx, CONSUMER_UPDATE, Target())
        consumer = self._found(consumer_id)
        consumer.description = _description(description)
        self._record_change(ctx, CONSUMER_UPDATE, AuditTarget("oauth1_consumer", consumer_id))
        self._session.commit()
        return OAuth1ConsumerRecord.of(consumer)

    def delete(self, ctx: CallContext, consumer_id: str) -> None:
        self._enforce(ctx, CONSUMER_DELETE, Target())
        self._session.delete(self._found(consumer_id))
        self._record_change(ctx, CONSUMER_DELETE, AuditTarget("oauth1_consumer", consumer_id))
        self._session.commit()

    def _found(self, consumer_id: str) -> OAuth1Consumer:
        consumer = self._session.get(OAuth1Consumer, consumer_id)
        if consumer is None:
            raise NotFound(f"Could not find consumer: {consumer_id}.")
        return consumer


def _description(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest("description must be a string")
    if value is not None and len(value) > MAX_BLOB:
        raise InvalidRequest("description is too long")
    return value
