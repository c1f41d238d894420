"""What `latchkey serve` does per worker, under either server it runs (issue 17).

``LATCHKEY_SERVER=gunicorn`` (the default) wires these into gunicorn's hooks
(latchkey/frontdoors/cli/main.py): ``post_worker_init`` settles the heap, ``post_request``
collects, ``child_exit`` and ``on_exit`` look after the metrics directory.

``LATCHKEY_SERVER=granian`` runs granian's WSGI interface (``run_granian``).
granian has no per-worker or per-request hooks of gunicorn's kind; what stands
in for each:

* the app is built once per worker process: granian calls ``granian_worker_app``
  in each worker it starts (a forked process; SIGHUP and a crashed worker's
  respawn start new ones, each building its own app). The change listeners
  (PostgreSQL LISTEN, SQLite ``data_version``) open lazily in the process that
  asks, so each worker gets its own, as under gunicorn;
* heap settling: ``granian_worker_app`` calls ``settle_worker_heap`` once the
  app is built, before the worker serves;
* collection between requests: no post-request hook, so the app is wrapped
  (``CollectBetweenRequests``): when a full collection is due, the response's
  iterable is wrapped and the collection runs in its ``close()``, which granian
  calls once the body has been handed over; otherwise the app's own iterable
  goes back untouched (one clock read per request);
* metrics: the multiprocess directory is set before granian starts (workers
  inherit ``PROMETHEUS_MULTIPROC_DIR``) and removed by an ``on_shutdown`` hook.
  There is no ``child_exit`` hook: ``mark_process_dead`` only drops live
  gauges, and Latchkey defines none (counters and histograms are totals and
  stay, as under gunicorn);
* SIGTERM/SIGINT: granian's main process stops every worker with SIGTERM; a
  worker stops accepting and finishes what it has, killed after
  ``GRACEFUL_SECONDS`` (gunicorn's graceful timeout); SIGHUP respawns the
  workers one by one (gunicorn's graceful reload);
* the process environment: granian copies ``os.environ`` into every request's
  environ; ``DropProcessVariables`` takes out the variables that would read as
  request headers;
* no request timeout: granian has no watchdog like gunicorn's 60 s worker
  timeout; Latchkey's own budgets bound a decision (docs/operations.md).
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from latchkey.settings import Settings, SettingsError

SERVERS = ("gunicorn", "granian")
# How long a worker may take to finish its requests after SIGTERM (gunicorn's default
# graceful_timeout) before it is killed.
GRACEFUL_SECONDS = 30

FULL_COLLECTION_SECONDS = 10.0
_next_full_collection = [0.0]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def settle_worker_heap(_worker: Any = None) -> None:
    """Once a worker has built the app: its objects (modules, schemas, compiled
    programs, ~150,000 of them) go to the collector's permanent generation, and
    full collections stop running by themselves, in the middle of a request (they
    paused one for 40-170 ms under the batch benchmark: the p99). Young garbage
    is still collected as usual; collect_between_requests does the full ones."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    _next_full_collection[0] = time.monotonic() + FULL_COLLECTION_SECONDS


def collect_between_requests(
    _worker: Any = None, _req: Any = None, _environ: Any = None, _resp: Any = None
) -> None:
    """A full collection every FULL_COLLECTION_SECONDS, once a response is sent."""
    now = time.monotonic()
    if now >= _next_full_collection[0]:
        gc.collect()
        _next_full_collection[0] = now + FULL_COLLECTION_SECONDS


class _CollectOnClose:
    """A response body whose ``close()`` also runs the due full collection."""

    __slots__ = ("_body",)

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()  # Flask's call_on_close writers (usage, decision samples) first
        finally:
            collect_between_requests()


class CollectBetweenRequests:
    """granian's stand-in for gunicorn's ``post_request``: see the module's docstring."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.app(environ, start_response)
        if time.monotonic() < _next_full_collection[0]:
            return body
        return _CollectOnClose(body)


# The WSGI keys a process environment variable could fake: request headers (HTTP_*),
# the body's type and length, and the CGI user.
_REQUEST_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_USER")


class DropProcessVariables:
    """granian builds each request's WSGI environ as a copy of the worker's
    ``os.environ`` with the request laid over it (granian/wsgi.py ``_callback_wrapper``).
    A variable of the service's environment named like a request header, such as
    ``HTTP_PROXY`` (set for outbound proxies) or ``HTTP_X_REQUEST_ID``, would read as a
    header the client sent, on every request that did not send it. Such variables are
    taken out of each environ where they still hold the environment's value (a client
    that sent the very same value loses nothing Latchkey reads). The rest of the process
    environment stays in the environ; nothing in Latchkey writes an environ out."""

    def __init__(self, app: WSGIApp, process_environment: dict[str, str]) -> None:
        self.app = app
        self._fakes = tuple(
            (key, value)
            for key, value in process_environment.items()
            if key.startswith("HTTP_") or key in _REQUEST_KEYS
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        for key, value in self._fakes:
            if environ.get(key) == value:
                del environ[key]
        return self.app(environ, start_response)


def granian_worker_app(settings: Settings) -> WSGIApp:
    """Run by granian in each worker process, before it serves."""
    from latchkey.app import create_app

    app = create_app(settings)
    settle_worker_heap()
    wrapped: WSGIApp = CollectBetweenRequests(app)
    if any(key.startswith("HTTP_") or key in _REQUEST_KEYS for key in os.environ):
        wrapped = DropProcessVariables(wrapped, dict(os.environ))
    return wrapped


def parse_bind(bind: str) -> tuple[str, int] | Path:
    """``host:port`` (``[v6]:port``) or ``unix:/path``, as gunicorn reads LATCHKEY_BIND."""
    if bind.startswith("unix:"):
        return Path(bind[len("unix:") :])
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f"setting 'bind' must be host:port or unix:/path, not {bind!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def granian_log_level(level: str) -> str:
    """granian's own log lines (start, workers, stop) at Latchkey's level."""
    known = {"critical", "error", "warning", "info", "debug"}
    return level.lower() if level.lower() in known else "info"


def run_granian(
    settings: Settings,
    bind: str,
    workers: int,
    on_shutdown: Callable[[], None],
) -> None:
    """Serve with granian's WSGI interface until SIGTERM/SIGINT (blocks)."""
    try:
        from granian.constants import Interfaces
        from granian.log import LogLevels
        from granian.server import Server
    except ImportError as exc:
        raise SettingsError(
            "LATCHKEY_SERVER=granian needs granian: pip install 'latchkey[granian]'"
        ) from exc
    where = parse_bind(bind)
    address: dict[str, Any] = (
        {"uds": where} if isinstance(where, Path) else {"address": where[0], "port": where[1]}
    )
    server = Server(
        "latchkey.app:create_app",  # what granian names in its logs; the loader below builds it
        interface=Interfaces.WSGI,
        workers=workers,
        # The Python threads that run the app in each worker; one Rust I/O thread reads
        # and writes the sockets and keeps connections alive.
        blocking_threads=max(1, settings.threads),
        runtime_threads=1,
        websockets=False,
        log_level=LogLevels(granian_log_level(settings.log_level)),
        log_access=False,  # Latchkey logs its own requests
        respawn_failed_workers=True,  # as gunicorn's arbiter replaces a dead worker
        workers_kill_timeout=GRACEFUL_SECONDS,
        **address,
    )
    server.on_shutdown(on_shutdown)
    server.serve(target_loader=functools.partial(granian_worker_app, settings), wrap_loader=False)
