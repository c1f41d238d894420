"""revocation notify

On PostgreSQL, every statement that inserts revocation events notifies the
`latchkey_revocation` channel; notifications are delivered when the inserting
transaction commits, so an id handed out early and committed late notifies
too. Workers listen there and query the events only when told something
changed (latchkey/changes/postgres.py). SQLite: nothing to do, the
workers query on every check.

Revision ID: 7d2e4b8c1a90
Revises: 3f5c9a7e1b2d
Create Date: 2026-11-23 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7d2e4b8c1a90'
down_revision = '3f5c9a7e1b2d'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(sa.text(
        """
        CREATE FUNCTION latchkey_revocation_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('latchkey_revocation', '');
            RETURN NULL;
        END;
        $$
        """
    ))
    op.execute(sa.text(
        """
        CREATE TRIGGER revocation_event_notify
        AFTER INSERT ON revocation_event
        FOR EACH STATEMENT EXECUTE FUNCTION latchkey_revocation_notify()
        """
    ))


def downgrade():
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute(sa.text('DROP TRIGGER IF EXISTS revocation_event_notify ON revocation_event'))
    op.execute(sa.text('DROP FUNCTION IF EXISTS latchkey_revocation_notify()'))
