"""Browser-facing defaults on every answer (issue 13, class 10).

A WSGI wrapper around the whole application, so that nothing escapes it: views,
problem documents, 404s and 405s of the router, Keystone-shaped errors, the
answers of the rate limiter and of authlib.

* ``X-Content-Type-Options: nosniff``: JSON is never sniffed into HTML.
* ``Referrer-Policy: no-referrer``.
* ``X-Frame-Options: DENY`` and ``Content-Security-Policy: default-src 'none';
  frame-ancestors 'none'``: an API answer is never framed, nor runs anything.
* ``Strict-Transport-Security`` when the request came over TLS: ``https`` as the
  server saw it, or a trusted proxy's ``X-Forwarded-Proto: https``
  (latchkey/frontdoors/http/proxies.py). Never over plain HTTP, where browsers ignore it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from latchkey.frontdoors.http.proxies import TrustedProxies

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
)


class SecurityHeaders:
    def __init__(self, app: WsgiApp, proxies: TrustedProxies, hsts_max_age: int) -> None:
        self._app = app
        self._proxies = proxies
        # (lowercased name, name, value), built once: this wraps every request.
        self._plain = tuple((n.lower(), n, v) for n, v in SECURITY_HEADERS)
        hsts = f"max-age={hsts_max_age}" if hsts_max_age > 0 else None
        self._tls = (
            (*self._plain, ("strict-transport-security", "Strict-Transport-Security", hsts))
            if hsts
            else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        extra = self._plain
        if self._tls is not None and self._proxies.scheme(environ) == "https":
            extra = self._tls

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers = headers + [(n, v) for low, n, v in extra if low not in present]
            return start_response(status, headers, exc_info)

        return self._app(environ, start)
