"""AWS request signatures, checked for Keystone's ``/v3/ec2tokens`` and ``/v3/s3tokens``.

Written from AWS's published descriptions of Signature Version 2 and Version 4
(as Keystone's EC2 utilities and botocore compute them): what is computed here is
the signature the client's secret gives the request, and the caller compares it
with the one sent, in constant time (``hmac.compare_digest``). Versions 0 and 1
(whose string to sign omits the verb, host and path, or sorts case-insensitively)
are refused: a signature over less of the request is replayable on other requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

V4_ALGORITHM = "AWS4-HMAC-SHA256"
V4_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# How far a signed request's own time may be from ours (Keystone's [credential]
# auth_ttl is 15 minutes).
FRESHNESS = timedelta(minutes=15)
S3_V4_SERVICES = (b"s3", b"iam", b"sts")


class SignatureRejected(Exception):
    """The request cannot be verified (malformed, stale, or an unsupported version);
    the reason stays in the audit trail, the caller answers a generic 401."""


def _quote(value: str) -> str:
    return quote(value, safe="-_~")


def canonical_query(params: Mapping[str, Any], exclude: tuple[str, ...] = ()) -> str:
    pairs = []
    for key in sorted(k for k in params if k not in exclude):
        pairs.append(quote(str(key), safe="") + "=" + _quote(str(params[key])))
    return "&".join(pairs)


def _hmac(key: bytes, message: bytes, digest: Any) -> bytes:
    return hmac.new(key, message, digest).digest()


def v4_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date.encode(), hashlib.sha256)
    key = _hmac(key, region.encode(), hashlib.sha256)
    key = _hmac(key, service.encode(), hashlib.sha256)
    return _hmac(key, b"aws4_request", hashlib.sha256)


def ec2_signature(secret: str, credentials: Mapping[str, Any], now: datetime) -> str:
    """The signature ``secret`` gives the request Keystone's ec2tokens describes
    (``host``, ``verb``, ``path``, ``params``, ``headers``, ``body_hash``)."""
    params = _mapping(credentials.get("params"), "params")
    headers = _mapping(credentials.get("headers"), "headers")
    host = _text(credentials.get("host"), "host")
    verb = _text(credentials.get("verb"), "verb")
    path = _text(credentials.get("path"), "path")
    version = params.get("SignatureVersion")
    if version is None:
        authorization = str(
            headers.get("Authorization") or _lower(headers).get("authorization") or ""
        )
        if "X-Amz-Algorithm" in params or authorization.startswith(V4_ALGORITHM):
            return _v4(secret, params, headers, verb, path, credentials.get("body_hash"), now)
        raise SignatureRejected("no signature version")
    if str(version) == "2":
        _check_v2_time(params, now)
        return _v2(secret, params, verb, host, path)
    raise SignatureRejected(f"signature version {version} is not supported")


def _v2(secret: str, params: Mapping[str, Any], verb: str, host: str, path: str) -> str:
    method = params.get("SignatureMethod", "HmacSHA256")
    digests = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}
    if method not in digests:
        raise SignatureRejected(f"signature method {method} is not supported")
    # Signed with the method named (HmacSHA256 when none is, as Keystone's signer adds it).
    signed = {k: v for k, v in params.items() if k != "Signature"} | {"SignatureMethod": method}
    to_sign = f"{verb.upper()}\n{host}\n{path}\n{canonical_query(signed)}"
    return base64.b64encode(_hmac(secret.encode(), to_sign.encode(), digests[method])).decode()


def _check_v2_time(params: Mapping[str, Any], now: datetime) -> None:
    if "Expires" in params:
        if _parse_time(str(params["Expires"])) < now:
            raise SignatureRejected("the signed request has expired")
    elif "Timestamp" in params:
        _check_fresh(_parse_time(str(params["Timestamp"])), now)


def _v4(
    secret: str,
    params: Mapping[str, Any],
    headers: Mapping[str, Any],
    verb: str,
    path: str,
    body_hash: Any,
    now: datetime,
) -> str:
    lower = _lower(headers)
    authorization = lower.get("authorization", "")

    def auth_param(name: str) -> str:
        if authorization:
            match = re.search(rf"{name}=([^,\s]*)", authorization)
            return match.group(1) if match else ""
        return str(params.get(f"X-Amz-{name}") or "")

    signed_headers = auth_param("SignedHeaders")
    scope = auth_param("Credential").split("/")
    if not signed_headers or len(scope) != 5 or scope[4] != "aws4_request":
        raise SignatureRejected("malformed signature version 4 credential scope")
    date = lower.get("x-amz-date") or str(params.get("X-Amz-Date") or "")
    if not date.startswith(scope[1]):
        raise SignatureRejected("the request date is not the credential scope's date")
    _check_fresh(_parse_v4_date(date), now)
    header_lines = []
    for name in signed_headers.split(";"):
        if name not in lower:
            raise SignatureRejected(f"signed header {name} is missing")
        header_lines.append(f"{name}:{' '.join(lower[name].split())}\n")
    query = "" if verb.upper() == "POST" else canonical_query(params, ("X-Amz-Signature",))
    if not isinstance(body_hash, str) or not body_hash:
        body_hash = lower.get("x-amz-content-sha256") or hashlib.sha256(b"").hexdigest()
    canonical = "\n".join(
        (verb.upper(), path or "/", query, "".join(header_lines), signed_headers, body_hash)
    )
    to_sign = "\n".join(
        (
            V4_ALGORITHM,
            date,
            "/".join(scope[1:]),
            hashlib.sha256(canonical.encode()).hexdigest(),
        )
    )
    key = v4_signing_key(secret, scope[1], scope[2], scope[3])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def s3_signature(secret: str, token: str, now: datetime) -> str:
    """The signature ``secret`` gives the string to sign swift's s3token middleware
    sends (base64): HMAC-SHA1 (version 2) or AWS4-HMAC-SHA256 (version 4)."""
    try:
        to_sign = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError) as exc:
        raise SignatureRejected("the string to sign is not base64") from exc
    if not to_sign.startswith(b"AWS4"):
        _check_s3_v2_time(to_sign, now)
        digest = _hmac(secret.encode(), to_sign, hashlib.sha1)
        return base64.b64encode(digest).decode()
    parts = to_sign.split(b"\n")
    if len(parts) != 4 or parts[0] != V4_ALGORITHM.encode():
        raise SignatureRejected("malformed signature version 4 string to sign")
    scope = parts[2].split(b"/")
    if len(scope) != 4 or scope[3] != b"aws4_request" or scope[2] not in S3_V4_SERVICES:
        raise SignatureRejected("malformed signature version 4 credential scope")
    try:
        date, region, service = (s.decode() for s in scope[:3])
        _check_fresh(_parse_v4_date(parts[1].decode()), now)
    except UnicodeDecodeError as exc:
        raise SignatureRejected("the credential scope is not text") from exc
    key = v4_signing_key(secret, date, region, service)
    return hmac.new(key, to_sign, hashlib.sha256).hexdigest()


def _check_s3_v2_time(to_sign: bytes, now: datetime) -> None:
    """S3's version 2 string to sign: verb, Content-MD5, Content-Type, then the Date
    (or, presigned, the Expires epoch; or empty, with an ``x-amz-date`` header line)."""
    lines = to_sign.decode("utf-8", "replace").split("\n")
    if len(lines) < 5:
        raise SignatureRejected("malformed signature version 2 string to sign")
    date = lines[3].strip()
    if date.isdigit():
        if datetime.fromtimestamp(int(date), UTC) < now:
            raise SignatureRejected("the signed request has expired")
        return
    if not date:
        amz = [line.split(":", 1)[1] for line in lines[4:] if line.startswith("x-amz-date:")]
        date = amz[0].strip() if amz else ""
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        when = _parse_v4_date(date)  # the ISO 8601 basic form some clients send
    _check_fresh(when if when.tzinfo else when.replace(tzinfo=UTC), now)


def matches(expected: str, given: Any) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


# -- helpers --------------------------------------------------------------------------


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SignatureRejected(f"{name} must be an object")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SignatureRejected(f"{name} must be a string")
    return value


def _lower(headers: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lower().strip(): str(v).strip() for k, v in headers.items()}


def _parse_v4_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, V4_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureRejected("X-Amz-Date is not YYYYMMDDTHHMMSSZ") from exc


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignatureRejected("the request's time is not ISO 8601") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_fresh(when: datetime, now: datetime) -> None:
    if abs(now - when) > FRESHNESS:
        raise SignatureRejected("the signed request is too old or from the future")
