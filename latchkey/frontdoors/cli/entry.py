"""The `latchkey` console script: the command, or one line saying what to install.

`pip install latchkey` is the relying services' middleware alone (docs/decisions.md);
the command needs the `server` extra. Without it, the first server import fails deep
in latchkey.frontdoors.cli.main with a traceback that names a module, not the fix.
"""

from __future__ import annotations

import sys

SERVER_MISSING = (
    "latchkey: the server's dependencies are not installed ({module} is missing); "
    "pip install 'latchkey[server]'"
)


def main() -> None:
    try:
        from latchkey.frontdoors.cli.main import main as command
    except ModuleNotFoundError as missing:
        if (missing.name or "latchkey").partition(".")[0] == "latchkey":
            raise
        sys.exit(SERVER_MISSING.format(module=missing.name))
    command()
