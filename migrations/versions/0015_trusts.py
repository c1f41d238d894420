"""OS-TRUST trusts: a trustor's roles on one project delegated to a trustee

Keystone's delegation (issue 14). A new table; nothing else changes, so the
previous release keeps working on the upgraded schema.

Revision ID: d4e6f8a10015
Revises: c3d5e7f90014
Create Date: 2026-12-06 23:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd4e6f8a10015'
down_revision = 'c3d5e7f90014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('trust',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('trustor_user_id', sa.String(length=64), nullable=False),
    sa.Column('trustee_user_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('impersonation', sa.Boolean(), nullable=False),
    sa.Column('role_ids', sa.JSON(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('remaining_uses', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_trust_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trustee_user_id'], ['user_account.id'], name=op.f('fk_trust_trustee_user_id_user_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trustor_user_id'], ['user_account.id'], name=op.f('fk_trust_trustor_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trust'))
    )
    with op.batch_alter_table('trust', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trust_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_trust_trustee_user_id'), ['trustee_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_trust_trustor_user_id'), ['trustor_user_id'], unique=False)


def downgrade():
    op.drop_table('trust')
