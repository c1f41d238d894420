"""Keystone catalog: regions, endpoints as their own rows, several services of a type

The services' JSON ``endpoints`` become rows of ``catalog_endpoint`` (each with an
id, as Keystone's); every region they name becomes a ``catalog_region``. A service
type is no longer unique (Keystone allows several services of one type; the native
API still refuses a second one). Latchkey's own services are marked ``builtin``.
Keystone's OS-EP-FILTER endpoint groups and ``/v3/policies`` blobs get their tables
(the blobs are not Latchkey's tenant policy).

Revision ID: c3d5e7f90014
Revises: b2c4d6e8f013
Create Date: 2026-12-06 23:20:00.000000

"""
import uuid
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c3d5e7f90014'
down_revision = 'b2c4d6e8f013'
branch_labels = None
depends_on = None

BUILTIN_TYPES = ('identity', 'policy', 'secrets')


def upgrade():
    conn = op.get_bind()
    service = sa.table(
        'catalog_service',
        sa.column('id', sa.String),
        sa.column('type', sa.String),
        sa.column('endpoints', sa.JSON),
        sa.column('builtin', sa.Boolean),
    )
    # Read before the table is rebuilt (SQLite) without its JSON column.
    old = [(row.id, row.endpoints or []) for row in conn.execute(
        sa.select(service.c.id, service.c.endpoints))]
    with op.batch_alter_table('catalog_service', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_catalog_service_type'), type_='unique')
        batch_op.alter_column('type', existing_type=sa.String(length=32),
                              type_=sa.String(length=255), existing_nullable=False)
        batch_op.add_column(sa.Column(
            'enabled', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column(
            'builtin', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('extra', sa.JSON(), nullable=True))
        batch_op.drop_column('endpoints')
        batch_op.create_index(batch_op.f('ix_catalog_service_type'), ['type'], unique=False)
    conn.execute(service.update().where(service.c.type.in_(BUILTIN_TYPES))
                 .values(builtin=True))

    op.create_table('catalog_region',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('description', sa.String(length=255), nullable=False),
    sa.Column('parent_region_id', sa.String(length=255), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_region'))
    )
    with op.batch_alter_table('catalog_region', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_catalog_region_parent_region_id'), ['parent_region_id'], unique=False)
    op.create_table('catalog_endpoint',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('service_id', sa.String(length=64), nullable=False),
    sa.Column('interface', sa.String(length=8), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('region_id', sa.String(length=255), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column('position', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['region_id'], ['catalog_region.id'], name=op.f('fk_catalog_endpoint_region_id_catalog_region'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['service_id'], ['catalog_service.id'], name=op.f('fk_catalog_endpoint_service_id_catalog_service'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_endpoint'))
    )
    with op.batch_alter_table('catalog_endpoint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_catalog_endpoint_region_id'), ['region_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_catalog_endpoint_service_id'), ['service_id'], unique=False)

    op.create_table('catalog_endpoint_group',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('filters', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_endpoint_group'))
    )
    op.create_table('keystone_policy_blob',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('blob', sa.Text(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_keystone_policy_blob'))
    )

    # The JSON endpoints become rows; the regions they name, regions.
    now = datetime.now(UTC)
    region = sa.table(
        'catalog_region',
        sa.column('id', sa.String), sa.column('description', sa.String),
        sa.column('created_at', sa.DateTime(timezone=True)),
    )
    endpoint = sa.table(
        'catalog_endpoint',
        sa.column('id', sa.String), sa.column('service_id', sa.String),
        sa.column('interface', sa.String), sa.column('url', sa.Text),
        sa.column('region_id', sa.String), sa.column('enabled', sa.Boolean),
        sa.column('position', sa.Integer),
        sa.column('created_at', sa.DateTime(timezone=True)),
    )
    regions = set()
    rows = []
    for service_id, endpoints in old:
        for position, item in enumerate(endpoints):
            if not isinstance(item, dict) or not item.get('url'):
                continue
            region_id = item.get('region') or None
            if region_id is not None:
                regions.add(region_id)
            rows.append({
                'id': uuid.uuid4().hex, 'service_id': service_id,
                'interface': item.get('interface') or 'public', 'url': item['url'],
                'region_id': region_id, 'enabled': True, 'position': position,
                'created_at': now,
            })
    if regions:
        op.bulk_insert(region, [
            {'id': r, 'description': '', 'created_at': now} for r in sorted(regions)])
    if rows:
        op.bulk_insert(endpoint, rows)


def downgrade():
    conn = op.get_bind()
    endpoint = sa.table(
        'catalog_endpoint',
        sa.column('service_id', sa.String), sa.column('interface', sa.String),
        sa.column('url', sa.Text), sa.column('region_id', sa.String),
        sa.column('position', sa.Integer),
    )
    kept: dict[str, list[dict[str, str]]] = {}
    for row in conn.execute(sa.select(endpoint).order_by(endpoint.c.position)):
        item = {'interface': row.interface, 'url': row.url}
        if row.region_id is not None:
            item['region'] = row.region_id
        kept.setdefault(row.service_id, []).append(item)
    op.drop_table('keystone_policy_blob')
    op.drop_table('catalog_endpoint_group')
    op.drop_table('catalog_endpoint')
    op.drop_table('catalog_region')
    with op.batch_alter_table('catalog_service', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_catalog_service_type'))
        batch_op.add_column(sa.Column(
            'endpoints', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.drop_column('extra')
        batch_op.drop_column('builtin')
        batch_op.drop_column('enabled')
        batch_op.alter_column('type', existing_type=sa.String(length=255),
                              type_=sa.String(length=32), existing_nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_catalog_service_type'), ['type'])
    service = sa.table('catalog_service', sa.column('id', sa.String),
                       sa.column('endpoints', sa.JSON))
    for service_id, items in kept.items():
        conn.execute(service.update().where(service.c.id == service_id)
                     .values(endpoints=items))
