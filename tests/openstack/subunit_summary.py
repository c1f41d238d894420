"""A subunit v2 stream (stdin) to one JSON object per test (stdout).

Run by .venv-tempest's interpreter (python-subunit and testtools are Tempest's
dependencies, not Latchkey's): ``stestr last --subunit | python subunit_summary.py``.
Each line: ``{"id", "status", "reason"}``, where ``status`` is subunit's (``success``,
``fail``, ``skip``, ``xfail``, ``uxsuccess``, ``inprogress``...) and ``reason`` the
last lines of the traceback (or the skip reason).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import subunit  # type: ignore[import-not-found]
import testtools  # type: ignore[import-not-found]

KEEP_LINES = 6


def _text(details: dict[str, Any], name: str) -> str:
    content = details.get(name)
    if content is None:
        return ""
    try:
        return "".join(content.iter_text())
    except Exception:
        return b"".join(content.iter_bytes()).decode("utf-8", "replace")


def main() -> None:
    def emit(case: dict[str, Any]) -> None:
        details = case.get("details") or {}
        reason = _text(details, "reason") or _text(details, "traceback")
        lines = [line for line in reason.strip().splitlines() if line.strip()]
        record = {
            "id": case["id"],
            "status": case["status"],
            "reason": "\n".join(lines[-KEEP_LINES:]),
        }
        sys.stdout.write(json.dumps(record) + "\n")

    result = testtools.StreamToDict(emit)
    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()


if __name__ == "__main__":
    main()
