"""A process that imports Latchkey keeps its own engines and sessions as they were (#16).

Latchkey's SQLite pragmas (WAL, foreign keys), its PostgreSQL ping and outage hooks and
its after-commit callbacks belong to Latchkey's own engine and sessions; a relying
service that installs the middleware loads no database code at all. Each check runs in
a fresh interpreter: what an import registers cannot be undone in this one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run(program: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_middleware_loads_no_flask_sqlalchemy_or_oso(tmp_path: Path) -> None:
    loaded = run(
        """
        import sys
        import latchkey.middleware
        print(sorted({name.split(".")[0] for name in sys.modules} & {"flask", "sqlalchemy", "oso"}))
        """,
        tmp_path,
    )
    assert loaded == "[]"


def test_building_an_app_leaves_a_hosts_engines_and_sessions_alone(tmp_path: Path) -> None:
    seen = run(
        f"""
        import os, sys
        os.environ["LATCHKEY_HOME"] = {str(tmp_path / "home")!r}
        from sqlalchemy import create_engine, event, text
        from sqlalchemy.orm import Session
        from latchkey.app import create_app
        from latchkey.db import _forget_on_commit, _run_on_commit

        create_app()
        host = create_engine("sqlite:///" + {str(tmp_path / "host.db")!r})
        with host.connect() as connection:
            journal = connection.execute(text("PRAGMA journal_mode")).scalar()
            foreign_keys = connection.execute(text("PRAGMA foreign_keys")).scalar()
        with Session(host) as session:
            hooks = [
                event.contains(Session, "after_commit", _run_on_commit),
                event.contains(Session, "after_rollback", _forget_on_commit),
                len(session.dispatch.after_commit),
                len(session.dispatch.after_flush),
            ]
            session.info["latchkey_on_commit"] = {{"k": lambda: print("ran a Latchkey hook")}}
            session.commit()
        print(journal, foreign_keys, hooks, "flask_sqlalchemy" in sys.modules)
        """,
        tmp_path,
    )
    assert seen == "delete 0 [False, False, 0, 0] False"
