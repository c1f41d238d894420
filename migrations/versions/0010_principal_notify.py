"""principal notify

On PostgreSQL, every statement that inserts, updates or deletes users or group
memberships notifies the `latchkey_principal` channel (at commit). Workers keep
principals (a user's name, kind, attributes and groups) for decisions and drop
them when told (latchkey/policy/service.py PrincipalCache). SQLite: nothing to
do, the workers watch PRAGMA data_version.

Revision ID: 8e3f5c9d2b01
Revises: 7d2e4b8c1a90
Create Date: 2026-11-22 07:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8e3f5c9d2b01'
down_revision = '7d2e4b8c1a90'
branch_labels = None
depends_on = None

TABLES = ('user_account', 'group_membership')


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(sa.text(
        """
        CREATE FUNCTION latchkey_principal_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('latchkey_principal', '');
            RETURN NULL;
        END;
        $$
        """
    ))
    for table in TABLES:
        op.execute(sa.text(
            f"""
            CREATE TRIGGER {table}_principal_notify
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION latchkey_principal_notify()
            """
        ))


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TABLES:
        op.execute(sa.text(f'DROP TRIGGER IF EXISTS {table}_principal_notify ON {table}'))
    op.execute(sa.text('DROP FUNCTION IF EXISTS latchkey_principal_notify()'))
