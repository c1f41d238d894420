"""login lockout per (user, source address)

Failed password logins are counted, and accounts locked, per user AND source
address (issue 13, class 6): five wrong passwords from a stranger's address lock
that address out of the account, not the user everywhere. The per-user columns
user_account.failed_logins and locked_until are no longer read; they stay (and
are reset by an administrator's password change) so that a rollback to the
previous release keeps working.

Revision ID: a1b7c3d9e5f2
Revises: 9a4c6e1f3d27
Create Date: 2026-12-06 20:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1b7c3d9e5f2'
down_revision = '9a4c6e1f3d27'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('login_lockout',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_login_lockout_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'source', name=op.f('pk_login_lockout'))
    )


def downgrade():
    op.drop_table('login_lockout')
