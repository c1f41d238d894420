"""Keystone v3 identity: project hierarchy and tags, default projects, extra
attributes, domain-specific roles, system and inherited role assignments

What Keystone's v3 API carries that Latchkey's own model had no place for (issue 14).
Every column is nullable or has a default, so the previous release keeps working
on the upgraded schema.

Revision ID: b2c4d6e8f013
Revises: a1b7c3d9e5f2
Create Date: 2026-12-06 23:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b2c4d6e8f013'
down_revision = 'a1b7c3d9e5f2'
branch_labels = None
depends_on = None


def upgrade():
    for table in ('domain', 'user_group'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_project_parent_id'), ['parent_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_project_parent_id_project'), 'project', ['parent_id'], ['id'])
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('default_project_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_user_account_default_project_id_project'), 'project',
            ['default_project_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('role', schema=None) as batch_op:
        batch_op.add_column(sa.Column('domain_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_role_domain_id'), ['domain_id'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_role_domain_id_domain'), 'domain', ['domain_id'], ['id'],
            ondelete='CASCADE')
    with op.batch_alter_table('role_assignment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('system', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column(
            'inherited', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table('project_tag',
    sa.Column('project_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_project_tag_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'name', name=op.f('pk_project_tag'))
    )


def downgrade():
    op.drop_table('project_tag')
    with op.batch_alter_table('role_assignment', schema=None) as batch_op:
        batch_op.drop_column('inherited')
        batch_op.drop_column('system')
    with op.batch_alter_table('role', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_role_domain_id_domain'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_role_domain_id'))
        batch_op.drop_column('extra')
        batch_op.drop_column('domain_id')
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_user_account_default_project_id_project'), type_='foreignkey')
        batch_op.drop_column('extra')
        batch_op.drop_column('default_project_id')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_project_parent_id_project'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_project_parent_id'))
        batch_op.drop_column('extra')
        batch_op.drop_column('parent_id')
    for table in ('domain', 'user_group'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('extra')
