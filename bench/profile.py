"""Summarise a py-spy ``--format raw`` recording (collapsed stacks) into the functions
that dominate: inclusive and self share of the samples, and our own (latchkey)
functions separately."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# Where the time goes, by the package of the innermost (self) frame.
PACKAGES = [
    ("database (sqlalchemy, sqlite3, psycopg)", ("sqlalchemy/", "sqlite3", "psycopg")),
    ("policy engine (oso/polar)", ("polar/", "oso/")),
    ("JWT/crypto (joserfc, cryptography, authlib)", ("joserfc/", "cryptography/", "authlib/")),
    ("password hashing (argon2)", ("argon2/",)),
    ("LDAP (ldap3)", ("ldap3/",)),
    ("HTTP server (gunicorn, socket)", ("gunicorn/", "socket.py", "selectors.py")),
    (
        "web framework (flask, werkzeug, smorest, webargs, marshmallow)",
        ("flask/", "werkzeug/", "flask_smorest/", "webargs/", "marshmallow/", "apispec/"),
    ),
    ("JSON (json)", ("json/",)),
    ("logging, metrics", ("logging/", "pythonjsonlogger/", "prometheus_client/")),
    ("latchkey", ("latchkey/",)),
]


def _package(name: str) -> str:
    for label, markers in PACKAGES:
        if any(m in name for m in markers):
            return label
    return "other"


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";")]
        # py-spy prefixes the process and thread: keep Python frames only.
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], only: str | None = None) -> list[list[Any]]:
        items = [(k, v) for k, v in counter.most_common() if only is None or only in k]
        return [[k, round(100 * v / total, 1)] for k, v in items[:top]]

    return {
        "samples": total,
        "inclusive": share(inclusive),
        "self": share(own),
        "latchkey_inclusive": share(inclusive, "latchkey/"),
        "by_package": share(packages),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(summarise(Path(sys.argv[1])), indent=2))
