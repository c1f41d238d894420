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
