"""system secrets in the secret store

Latchkey's own secrets (signing keys, credential pepper, LDAP bind passwords)
move into the configured secret store: a registry of references, signing keys
without a sealed private key, and local-store blobs that may belong to
Latchkey itself rather than to a tenant secret. Moving the sealed material is
`latchkey secrets migrate-internal` (it needs the store, which a migration has
not); `latchkey serve` runs it at start.

Revision ID: 3f5c9a7e1b2d
Revises: 6cc1441381f3
Create Date: 2026-11-22 04:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '3f5c9a7e1b2d'
down_revision = '6cc1441381f3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('system_secret',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('store', sa.String(length=32), nullable=False),
    sa.Column('reference', sa.String(length=512), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_system_secret'))
    )
    with op.batch_alter_table('signing_key', schema=None) as batch_op:
        batch_op.alter_column('sealed_private_key',
               existing_type=sa.LargeBinary(),
               nullable=True)

    with op.batch_alter_table('local_secret_blob', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tenant_secret_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_local_secret_blob_tenant_secret_id'), ['tenant_secret_id'], unique=False)
    # Every blob so far belongs to a tenant secret.
    op.execute(sa.text('UPDATE local_secret_blob SET tenant_secret_id = secret_id'))
    with op.batch_alter_table('local_secret_blob', schema=None) as batch_op:
        batch_op.drop_constraint('fk_local_secret_blob_secret_id_tenant_secret', type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_local_secret_blob_tenant_secret_id_tenant_secret'), 'tenant_secret', ['tenant_secret_id'], ['id'], ondelete='CASCADE')


def downgrade():
    # Only for a database whose own secrets were never moved: Latchkey's blobs go.
    op.execute(sa.text('DELETE FROM local_secret_blob WHERE tenant_secret_id IS NULL'))
    with op.batch_alter_table('local_secret_blob', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_local_secret_blob_tenant_secret_id_tenant_secret'), type_='foreignkey')
        batch_op.create_foreign_key('fk_local_secret_blob_secret_id_tenant_secret', 'tenant_secret', ['secret_id'], ['id'], ondelete='CASCADE')
        batch_op.drop_index(batch_op.f('ix_local_secret_blob_tenant_secret_id'))
        batch_op.drop_column('tenant_secret_id')

    op.execute(
        sa.text('UPDATE signing_key SET sealed_private_key = :empty WHERE sealed_private_key IS NULL')
        .bindparams(sa.bindparam('empty', b'', type_=sa.LargeBinary()))
    )
    with op.batch_alter_table('signing_key', schema=None) as batch_op:
        batch_op.alter_column('sealed_private_key',
               existing_type=sa.LargeBinary(),
               nullable=False)

    op.drop_table('system_secret')
