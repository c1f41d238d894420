"""Structured JSON logs (python-json-logger), one line per event."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str, as_json: bool) -> None:
    root = logging.getLogger()
    if getattr(root, "_latchkey_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    root._latchkey_configured = True  # type: ignore[attr-defined]
