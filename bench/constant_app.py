"""The ceiling for any online endpoint: a WSGI app that always answers the same
small JSON document, served by gunicorn with the settings `latchkey serve` uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b'{"ok": true}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", HEADERS)
    return [BODY]


def flask_app() -> Any:
    """The same answer from a bare Flask app (one route, ``jsonify``, no hooks): what
    the web framework alone costs under the same server, a ceiling for any Flask
    endpoint, Latchkey's included."""
    from flask import Flask, jsonify

    flask = Flask("constant")

    @flask.get("/")
    def constant() -> Any:
        return jsonify(ok=True)

    return flask


flask = flask_app()


# The same constant answer at the size of a validation's (issue 17): a token's claims
# (~700 bytes) and the seven headers Latchkey sends, asked with a caller's and a subject
# token (~2 KB of headers). What the server alone costs to carry a validation's bytes.
SIZED_BODY = b'{"ok": true, "pad": "' + b"x" * 690 + b'"}'
SIZED_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(SIZED_BODY))),
    ("X-Request-Id", "req-0123456789abcdef"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
]


def sized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", SIZED_HEADERS)
    return [SIZED_BODY]
