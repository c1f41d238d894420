"""policy notify

On PostgreSQL, every statement that inserts, updates or deletes which policy
version a project or domain has in force, or adds a boundary, notifies the
`latchkey_policy` channel (at commit). Workers keep active versions and the
boundary until told (latchkey/changes/generation.py), instead of re-reading them every
2 s. SQLite: nothing to do, the workers watch PRAGMA data_version.

Revision ID: 9a4c6e1f3d27
Revises: 8e3f5c9d2b01
Create Date: 2026-12-06 08:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9a4c6e1f3d27'
down_revision = '8e3f5c9d2b01'
branch_labels = None
depends_on = None

TABLES = ('project_policy', 'domain_policy', 'policy_boundary')


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(sa.text(
        """
        CREATE FUNCTION latchkey_policy_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('latchkey_policy', '');
            RETURN NULL;
        END;
        $$
        """
    ))
    for table in TABLES:
        op.execute(sa.text(
            f"""
            CREATE TRIGGER {table}_policy_notify
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION latchkey_policy_notify()
            """
        ))


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TABLES:
        op.execute(sa.text(f'DROP TRIGGER IF EXISTS {table}_policy_notify ON {table}'))
    op.execute(sa.text('DROP FUNCTION IF EXISTS latchkey_policy_notify()'))
