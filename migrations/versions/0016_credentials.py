"""Keystone v3 credentials (EC2 keys among them), their blobs sealed; OAuth1 consumers;
domain configuration

Revision ID: e5f7a9b20016
Revises: d4e6f8a10015
Create Date: 2026-12-06 23:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e5f7a9b20016'
down_revision = 'd4e6f8a10015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('keystone_credential',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('blob_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_keystone_credential_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_keystone_credential_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_keystone_credential'))
    )
    with op.batch_alter_table('keystone_credential', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keystone_credential_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_keystone_credential_user_id'), ['user_id'], unique=False)
    op.create_table('oauth1_consumer',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('secret_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth1_consumer'))
    )
    op.create_table('domain_config',
    sa.Column('domain_id', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_id'], ['domain.id'], name=op.f('fk_domain_config_domain_id_domain'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('domain_id', name=op.f('pk_domain_config'))
    )


def downgrade():
    op.drop_table('domain_config')
    op.drop_table('oauth1_consumer')
    op.drop_table('keystone_credential')
