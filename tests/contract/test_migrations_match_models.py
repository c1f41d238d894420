"""The migrations build exactly the schema the models describe, on both databases:
a column added to a model without its migration (or the reverse) fails here, not in
production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from latchkey.db import Base
from tests.conftest import database_of


def test_migrated_schema_matches_the_models(app: Flask) -> None:
    with app.app_context(), database_of(app).engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []
