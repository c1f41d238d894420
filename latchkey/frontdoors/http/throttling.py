"""Throttling of every door that checks a password or a secret (issue 13, class 6).

Flask-Limiter, checked before the view runs, so before any hash is computed:

* per source address (the client address, latchkey/frontdoors/http/proxies.py), shared by
  every door: ``LATCHKEY_RATELIMIT_AUTH_PER_SOURCE``;
* per account, as the request names it (user id, or domain and user name; a
  credential id, or owner and credential name; an OAuth ``client_id``), from all
  sources together: ``LATCHKEY_RATELIMIT_AUTH_PER_ACCOUNT``. The key is a hash of
  the request's own words: no lookup, so a known and an unknown account are
  throttled alike. A source that logged into the account successfully within
  ``LATCHKEY_RATELIMIT_KNOWN_SOURCE_DAYS`` is exempt from this one (not from the
  per-source limit): strangers cannot throttle a user at her usual address.

Only failures count (a 401 or 403, and the OAuth endpoints' 400
``invalid_client``): a service that logs in correctly a thousand times a minute
is never throttled, while a guesser is stopped before its hashes are paid for.
Past a limit the answer is ``429 too_many_requests`` with ``Retry-After``
(Keystone-shaped under ``/v3``, like every answer there).

Counts live in ``LATCHKEY_RATELIMIT_STORAGE_URL``: ``memory://`` per worker
process, or Redis shared by every worker and node (falling back to memory while
Redis is unreachable).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from limits import parse_many

from latchkey import metrics
from latchkey.frontdoors.http.context import client_address
from latchkey.settings import Settings, SettingsError

log = logging.getLogger(__name__)
LIMITER_EXTENSION = "latchkey_limiter"
KEY_PREFIX = "latchkey"
SOURCE_SCOPE = "auth-source"
ACCOUNT_SCOPE = "auth-account"
KNOWN_SOURCES = "latchkey_known_sources"
_NO_ACCOUNT = "-"  # the request names none: it cannot reach a hash either


# -- what an attempt is about --------------------------------------------------------


def _account_key(*parts: str) -> str:
    """A fixed-length key from the request's own words, case-folded (a lookup that is
    case-insensitive anywhere must not multiply an attacker's budget)."""
    text = "\x1f".join(part.casefold() for part in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _domain_part(domain: Any) -> str:
    if not isinstance(domain, dict):
        return ""
    if _text(domain.get("id")):
        return "id:" + domain["id"]
    return "name:" + (_text(domain.get("name")) or "")


def _user_account(user: Any) -> str | None:
    if not isinstance(user, dict):
        return None
    if _text(user.get("id")):
        return _account_key("user-id", user["id"])
    if _text(user.get("name")):
        return _account_key("user", _domain_part(user.get("domain")), user["name"])
    return None


def _credential_account(credential: Any) -> str | None:
    if not isinstance(credential, dict):
        return None
    if _text(credential.get("id")):
        return _account_key("credential-id", credential["id"])
    if _text(credential.get("name")):
        owner = credential.get("user")
        owner_part = ""
        if isinstance(owner, dict):
            owner_part = (
                "id:" + owner["id"]
                if _text(owner.get("id"))
                else _domain_part(owner.get("domain")) + "/" + (_text(owner.get("name")) or "")
            )
        return _account_key("credential", owner_part, credential["name"])
    return None


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    return body if isinstance(body, dict) else {}


def _native_account() -> str | None:
    auth = _json().get("auth")
    if not isinstance(auth, dict):
        return None
    password = auth.get("password")
    if isinstance(password, dict):
        return _user_account(password.get("user"))
    return _credential_account(auth.get("application_credential"))


def _keystone_account() -> str | None:
    auth = _json().get("auth")
    identity = auth.get("identity") if isinstance(auth, dict) else None
    if not isinstance(identity, dict):
        return None
    password = identity.get("password")
    if isinstance(password, dict):
        return _user_account(password.get("user"))
    return _credential_account(identity.get("application_credential"))


def _oauth_account() -> str | None:
    client_id: str | None = None
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        client_id = decoded.partition(":")[0] or None
    if client_id is None:
        client_id = _text(request.form.get("client_id"))
    if client_id is None:
        return None
    from urllib.parse import unquote

    return _account_key("credential-id", unquote(client_id))


def _ec2_account() -> str | None:
    body = _json()
    signed = body.get("credentials", body.get("ec2Credentials"))
    access = _text(signed.get("access")) if isinstance(signed, dict) else None
    return _account_key("ec2-access", access) if access else None


def _password_change_account() -> str | None:
    user_id = _text((request.view_args or {}).get("user_id"))
    return _account_key("user-id", user_id) if user_id else None


# endpoint -> how to name the account it authenticates
DOORS: dict[str, Callable[[], str | None]] = {
    "tokens.TokensView": _native_account,
    "keystone.issue_token": _keystone_account,
    "oauth2.token": _oauth_account,
    "oauth2.introspect": _oauth_account,
    "oauth2.revoke": _oauth_account,
    "identity.change_password": _password_change_account,
    "keystone.ec2_tokens": _ec2_account,
    "keystone.s3_tokens": _ec2_account,
}


def _source_key() -> str:
    return client_address() or "unknown"


def _account_of_request() -> str:
    """Which account the attempt is about; worked out once per request (the account
    limit's key, its exemption and the known-source mark each ask)."""
    known: str | None = g.get("throttling_account")
    if known is not None:
        return known
    name = DOORS.get(request.endpoint or "")
    try:
        account = name() if name is not None else None
    except Exception:  # a body no door can read: it is refused before any hash
        account = None
    g.throttling_account = account = account or _NO_ACCOUNT
    return account


def _known_key(account: str, source: str) -> str:
    return f"{KEY_PREFIX}/known-source/{account}/{source}"


class KnownSources:
    """Which source logged into which account lately (``LATCHKEY_RATELIMIT_KNOWN_SOURCE_DAYS``).

    Beside the counts in Redis when they are shared there. With ``memory://``, in this
    process: limits' memory storage starts a thread that sweeps every key after each
    write, which at the first logins of 2,000 credentials took a third of a worker's
    time. Here a mark is a dict entry, the oldest dropped past ``max_entries``."""

    def __init__(
        self, storage: Any, seconds: int, shared: bool, max_entries: int = 100_000
    ) -> None:
        self._storage = storage
        self._seconds = seconds
        self._shared = shared
        self._max_entries = max_entries
        self._local: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def knows(self, key: str) -> bool:
        if self._shared:
            return bool(self._storage.get(key))
        return self._local.get(key, 0.0) > time.monotonic()

    def remember(self, key: str) -> None:
        """Marked once, not at every login (a write to Redis is a round trip); the mark
        lapses ``seconds`` after it was made and the next login makes it again."""
        if self.knows(key):
            return
        if self._shared:
            self._storage.incr(key, self._seconds)
            return
        with self._lock:
            self._local[key] = time.monotonic() + self._seconds
            self._local.move_to_end(key)
            while len(self._local) > self._max_entries:
                self._local.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._local.clear()


def _known_sources() -> KnownSources | None:
    known: KnownSources | None = current_app.extensions.get(KNOWN_SOURCES)
    return known


def _from_known_source() -> bool:
    """Has this source logged into this account lately? Then the per-account limit
    does not apply to it: a stranger's guesses cannot throttle a user at the address
    she always logs in from (her own failures still count per source and lock it)."""
    account = _account_of_request()
    known = _known_sources()
    if account == _NO_ACCOUNT or known is None:
        return False
    try:
        return known.knows(_known_key(account, _source_key()))
    except Exception:  # storage unreachable: the limit applies
        return False


def _remember_known_source(response: Response) -> Response:
    if request.endpoint not in DOORS or request.method != "POST" or response.status_code >= 300:
        return response
    account = _account_of_request()
    known = _known_sources()
    if account != _NO_ACCOUNT and known is not None:
        try:
            known.remember(_known_key(account, _source_key()))
        except Exception:  # storage unreachable: nothing remembered
            log.warning("throttling storage unreachable: a known source is not remembered")
    return response


def _failed(response: Response) -> bool:
    """Did this attempt fail to authenticate (and so count)?"""
    status = response.status_code
    if status in (401, 403):
        return True
    return status == 400 and request.path.startswith("/oauth2/")


# -- wiring --------------------------------------------------------------------------


def _limits(name: str, value: str) -> str:
    try:
        parse_many(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {value!r} is not a rate limit ({exc})") from exc
    return value


def install_throttling(app: Flask, settings: Settings) -> Limiter | None:
    """Limits on every door in ``DOORS``; call after every blueprint is registered."""
    if not settings.ratelimit_enabled:
        return None
    per_source = _limits("ratelimit_auth_per_source", settings.ratelimit_auth_per_source)
    per_account = _limits("ratelimit_auth_per_account", settings.ratelimit_auth_per_account)
    limiter = Limiter(
        key_func=_source_key,
        app=app,
        storage_uri=settings.ratelimit_storage_url,
        strategy="moving-window",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,  # Retry-After only, on a 429 (below)
        in_memory_fallback_enabled=True,
        default_limits=[],
    )
    source_limit = limiter.shared_limit(
        per_source,
        scope=SOURCE_SCOPE,
        key_func=_source_key,
        deduct_when=_failed,
        methods=["POST"],
    )
    account_limit = limiter.shared_limit(
        per_account,
        scope=ACCOUNT_SCOPE,
        key_func=_account_of_request,
        deduct_when=_failed,
        exempt_when=_from_known_source,
        methods=["POST"],
    )
    # The limits are on the doors' views only, and each view's wrapper checks them
    # itself before the view runs; Flask-Limiter's own before_request hook would
    # only look for limits on every other request (~50-150 us each, measured).
    # Likewise its after_request hook (counting the failures) runs for the doors only.
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if getattr(hook, "__self__", None) is not limiter]
    after = app.after_request_funcs.get(None, [])
    for i, hook in enumerate(after):
        if isinstance(hook, functools.partial) and limiter in hook.args:
            after[i] = _for_doors_only(hook)
    for endpoint in DOORS:
        view = app.view_functions.get(endpoint)
        if view is None:
            raise RuntimeError(f"throttling: no view {endpoint!r}")
        app.view_functions[endpoint] = _posts_only(view, account_limit(source_limit(view)))
    app.extensions[LIMITER_EXTENSION] = limiter
    app.extensions[KNOWN_SOURCES] = KnownSources(
        limiter.storage,
        settings.ratelimit_known_source_days * 86400,
        shared=not settings.ratelimit_storage_url.startswith("memory://"),
    )
    app.after_request(_retry_after)
    app.after_request(_remember_known_source)
    return limiter


def _posts_only(view: Callable[..., Any], limited: Callable[..., Any]) -> Callable[..., Any]:
    """The limits apply to POST alone, yet Flask-Limiter's wrapper resolves them on
    every method of the endpoint (~150 us of each online validation, GET on the same
    endpoint as the login): other methods call the view itself."""

    @functools.wraps(view)
    def door(*args: Any, **kwargs: Any) -> Any:
        if request.method == "POST":
            return limited(*args, **kwargs)
        return view(*args, **kwargs)

    return door


def _for_doors_only(hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
    def counted(response: Response) -> Response:
        if request.method == "POST" and request.endpoint in DOORS:
            return hook(response)
        return response

    return counted


def _retry_after(response: Response) -> Response:
    """``Retry-After`` on every 429: when the breached window lets one more in; and
    the 429 counted by door (``latchkey_rate_limited_total``)."""
    if response.status_code != 429:
        return response
    door = request.endpoint if request.endpoint in DOORS else "other"
    metrics.child(metrics.RATE_LIMITED, door or "other").inc()
    if "Retry-After" in response.headers:
        return response
    limiter: Limiter | None = current_app.extensions.get(LIMITER_EXTENSION)
    seconds = 1
    breached = limiter.current_limit if limiter is not None else None
    if breached is not None:
        try:
            seconds = max(1, math.ceil(breached.reset_at - time.time()))
        except Exception:  # storage gone between the check and now: say one second
            seconds = 1
    response.headers["Retry-After"] = str(seconds)
    return response


def reset_throttling(app: Flask) -> None:
    """Forget every count (tests; an operator after an incident: restart, or flush Redis)."""
    limiter: Limiter | None = app.extensions.get(LIMITER_EXTENSION)
    if limiter is None:
        return
    app.extensions[KNOWN_SOURCES].forget()
    try:
        limiter.reset()
    except Exception:  # storage unreachable: nothing to forget there
        log.warning("throttling storage unreachable: its counts were not reset")
