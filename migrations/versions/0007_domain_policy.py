"""domain policy

Revision ID: 6cc1441381f3
Revises: aa3e2fb06479
Create Date: 2026-11-22 04:02:22.449393

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '6cc1441381f3'
down_revision = 'aa3e2fb06479'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('domain_policy',
    sa.Column('domain_id', sa.String(length=64), nullable=False),
    sa.Column('active_version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domain.id'], name=op.f('fk_domain_policy_domain_id_domain'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('domain_id', name=op.f('pk_domain_policy'))
    )
    op.create_table('domain_policy_version',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('domain_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('author_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domain.id'], name=op.f('fk_domain_policy_version_domain_id_domain'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_domain_policy_version')),
    sa.UniqueConstraint('domain_id', 'version', name=op.f('uq_domain_policy_version_domain_id_version'))
    )
    with op.batch_alter_table('domain_policy_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_domain_policy_version_domain_id'), ['domain_id'], unique=False)


def downgrade():
    with op.batch_alter_table('domain_policy_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_domain_policy_version_domain_id'))

    op.drop_table('domain_policy_version')
    op.drop_table('domain_policy')
