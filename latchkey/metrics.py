"""The metric families an operator graphs (issue 15, point 6; docs/operators.md "Metrics").

Every family has labels, and every label value comes from a small fixed set
(a method, an outcome, an operation, a door): never an id or a name, so a
client cannot mint series. Children are looked up once per label set and kept
(``labels()`` takes a lock and builds a key).

Under ``latchkey serve`` the figures are the sum over every gunicorn worker:
``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` (``use_multiprocess_dir``) before
any metric child exists, each worker writes its values to its own memory-mapped
files there, gunicorn's ``child_exit`` hook marks a dead worker's files
(``worker_exited``) and ``/metrics`` reads them all (``exposition``). In one
process (tests, ``flask run``) the default registry answers.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets for calls that are usually sub-millisecond (decisions) and for
# calls that cross a network (the secret store, LDAP).
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
REMOTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0)

TOKENS_ISSUED = Counter(
    "latchkey_tokens_issued_total",
    "Token requests by authentication method and outcome "
    "(issued, failed: 401, denied: 403, invalid: other 4xx, error: 5xx)",
    ["method", "outcome"],
)
TOKEN_VALIDATIONS = Counter(
    "latchkey_token_validations_total",
    "Token validations by the token's authentication method and outcome "
    "(valid, invalid: signature/claims/expiry, revoked)",
    ["method", "outcome"],
)
DECISIONS = Counter(
    "latchkey_decisions_total",
    "Authorization decisions by outcome (allowed, denied, budget: past its time budget, "
    "error: evaluation failed; budget and error are denials too)",
    ["outcome"],
)
DECISION_SECONDS = Histogram(
    "latchkey_decision_seconds",
    "Time to answer a decision request, by kind (check, batch, actions)",
    ["kind"],
    buckets=FAST_BUCKETS,
)
SECRET_STORE_SECONDS = Histogram(
    "latchkey_secret_store_seconds",
    "Secret store calls by store and operation (put, get, delete, delete_version)",
    ["store", "operation"],
    buckets=REMOTE_BUCKETS,
)
SECRET_STORE_ERRORS = Counter(
    "latchkey_secret_store_errors_total",
    "Secret store calls that failed (the store did not answer or refused)",
    ["store", "operation"],
)
LDAP_SECONDS = Histogram(
    "latchkey_ldap_seconds",
    "LDAP directory calls by operation",
    ["operation"],
    buckets=REMOTE_BUCKETS,
)
LDAP_ERRORS = Counter(
    "latchkey_ldap_errors_total",
    "LDAP directory calls that failed (unreachable, bind or search refused)",
    ["operation"],
)
RATE_LIMITED = Counter(
    "latchkey_rate_limited_total",
    "Requests answered 429 by the throttling of a door (the view's endpoint)",
    ["door"],
)
CHANGE_LAG = Histogram(
    "latchkey_change_signal_lag_seconds",
    "From a revocation event's creation (on any node) to a worker reading it into its "
    "revocation mirror, by change signal (notify, sqlite, none)",
    ["signal"],
    buckets=LAG_BUCKETS,
)
LISTENER_FAILURES = Counter(
    "latchkey_change_listener_failures_total",
    "Times a worker's LISTEN connection could not be opened or was lost (until it is back, "
    "every check queries the database)",
    ["event"],
)

_Child = Any
_children: dict[tuple[object, tuple[str, ...]], _Child] = {}


def child(metric: Counter | Histogram, *labels: str) -> _Child:
    """``metric.labels(*labels)``, looked up once per label set."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children.setdefault(key, metric.labels(*labels))
    return found


T = TypeVar("T")


# -- issuance and validation ----------------------------------------------------------


def _issuance_outcome(exc: BaseException) -> str:
    status = getattr(exc, "status", 500)
    if status == 401:
        return "failed"
    if status == 403:
        return "denied"
    if isinstance(status, int) and 400 <= status < 500:
        return "invalid"
    return "error"


F = TypeVar("F", bound=Callable[..., Any])


def count_issuance(method: str) -> Callable[[F], F]:
    """Count a token-issuing method's calls by outcome (``latchkey_tokens_issued_total``)."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                issued = function(*args, **kwargs)
            except BaseException as exc:
                child(TOKENS_ISSUED, method, _issuance_outcome(exc)).inc()
                raise
            child(TOKENS_ISSUED, method, "issued").inc()
            return issued

        return cast(F, counted)

    return decorate


# The methods a token may name (its `methods` claim); anything else counts as "other".
TOKEN_METHODS = frozenset({"password", "application_credential"})


def count_validation(claims: dict[str, Any] | None, outcome: str) -> None:
    methods = claims.get("methods") if claims is not None else None
    method = methods[0] if isinstance(methods, list) and methods else "unknown"
    if method not in TOKEN_METHODS and method != "unknown":
        method = "other"
    child(TOKEN_VALIDATIONS, method, outcome).inc()


# -- decisions --------------------------------------------------------------------------


def decision_outcome(allowed: bool, decided_by: str) -> str:
    if allowed:
        return "allowed"
    if decided_by in ("budget", "error"):
        return decided_by
    return "denied"


def count_decisions(kind: str, started: float, outcomes: list[tuple[bool, str]]) -> None:
    """One request's decisions: its latency once, each outcome's count once (a batch
    of 1,000 checks is a handful of increments, not a thousand)."""
    child(DECISION_SECONDS, kind).observe(time.perf_counter() - started)
    if len(outcomes) == 1:
        allowed, decided_by = outcomes[0]
        child(DECISIONS, decision_outcome(allowed, decided_by)).inc()
        return
    tally: dict[str, int] = {}
    for allowed, decided_by in outcomes:
        outcome = decision_outcome(allowed, decided_by)
        tally[outcome] = tally.get(outcome, 0) + 1
    for outcome, count in tally.items():
        child(DECISIONS, outcome).inc(count)


# -- the secret store ------------------------------------------------------------------

STORE_OPERATIONS = ("put", "get", "delete", "delete_version")


def instrument_store(store: Any) -> Any:
    """Time the store's calls, on the instance itself (``isinstance`` still holds).
    A payload that is not there (``SecretPayloadMissing``, a 404) is an answer, not
    an error of the store."""
    from latchkey.secrets.backends import SecretPayloadMissing

    name = str(getattr(store, "name", "unknown"))
    for operation in STORE_OPERATIONS:
        method = getattr(store, operation, None)
        if method is None:
            continue
        setattr(store, operation, _timed_call(method, name, operation, SecretPayloadMissing))
    return store


def _timed_call(
    method: Callable[..., T], store: str, operation: str, not_an_error: type[Exception]
) -> Callable[..., T]:
    seconds = child(SECRET_STORE_SECONDS, store, operation)
    errors = child(SECRET_STORE_ERRORS, store, operation)

    def call(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except not_an_error:
            raise
        except Exception:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


# -- one process or many ------------------------------------------------------------


def use_multiprocess_dir(path: str | None = None) -> Path:
    """Make this process (and the workers it forks) write metrics to files in a
    directory: ``PROMETHEUS_MULTIPROC_DIR`` if the operator set it, else a fresh
    temporary one. Its old files are removed (counts of an earlier run must not be
    added to this one's). Call before any metric child is created."""
    given = path or os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="latchkey-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus_client chooses its value class when it is imported; it may have been
    # imported (by latchkey's modules) before the variable was set.
    values.ValueClass = values.get_value_class()
    _children.clear()
    return directory


def remove_multiprocess_dir(directory: Path) -> None:
    """At the server's exit: the temporary directory ``use_multiprocess_dir`` made."""
    if directory.name.startswith("latchkey-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit``: a dead worker's live gauges no longer count (its
    counters and histograms still do: they are totals)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def exposition() -> tuple[bytes, str]:
    """The text a scraper reads: every worker's figures summed in multiprocess mode,
    this process's otherwise."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
