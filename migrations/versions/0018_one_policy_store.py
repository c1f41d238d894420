"""one policy store for projects and domains

Project and domain rule documents were kept in two pairs of tables of the same
shape (project_policy + policy_version, domain_policy + domain_policy_version).
They become one pair: tenant_policy (which version is active, for a project or a
domain: exactly one of project_id and domain_id, each a foreign key, so deleting
the project or domain still deletes its policy) and tenant_policy_version. Every
row is copied; versions keep their numbers, authors and times. On PostgreSQL the
latchkey_policy NOTIFY trigger (0011) moves to tenant_policy. The downgrade copies
the rows back into the two pairs.

Revision ID: a7b9c1d30018
Revises: f6a8b0c30017
Create Date: 2026-12-07 02:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7b9c1d30018'
down_revision = 'f6a8b0c30017'
branch_labels = None
depends_on = None

# (active-version table, versions table, the scope's column, the table it refers to)
OLD_PAIRS = (
    ('project_policy', 'policy_version', 'project_id', 'project'),
    ('domain_policy', 'domain_policy_version', 'domain_id', 'domain'),
)


def _postgresql():
    return op.get_bind().dialect.name == 'postgresql'


def _notify_on(table):
    op.execute(sa.text(
        f"""
        CREATE TRIGGER {table}_policy_notify
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION latchkey_policy_notify()
        """
    ))


def upgrade():
    op.create_table('tenant_policy',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('project_id', sa.String(length=64), nullable=True),
    sa.Column('domain_id', sa.String(length=64), nullable=True),
    sa.Column('active_version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(project_id IS NULL) <> (domain_id IS NULL)', name=op.f('ck_tenant_policy_one_scope')),
    sa.ForeignKeyConstraint(['domain_id'], ['domain.id'], name=op.f('fk_tenant_policy_domain_id_domain'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_tenant_policy_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_policy')),
    sa.UniqueConstraint('domain_id', name=op.f('uq_tenant_policy_domain_id')),
    sa.UniqueConstraint('project_id', name=op.f('uq_tenant_policy_project_id'))
    )
    op.create_table('tenant_policy_version',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('author_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['policy_id'], ['tenant_policy.id'], name=op.f('fk_tenant_policy_version_policy_id_tenant_policy'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_policy_version')),
    sa.UniqueConstraint('policy_id', 'version', name=op.f('uq_tenant_policy_version_policy_id_version'))
    )
    with op.batch_alter_table('tenant_policy_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tenant_policy_version_policy_id'), ['policy_id'], unique=False)

    for active, versions, column, _ in OLD_PAIRS:
        op.execute(sa.text(
            f'INSERT INTO tenant_policy ({column}, active_version, updated_at)'
            f' SELECT {column}, active_version, updated_at FROM {active}'
        ))
        # Every saved version has its active-version row (saving one activates it).
        op.execute(sa.text(
            'INSERT INTO tenant_policy_version (policy_id, version, document, author_id, created_at)'
            f' SELECT p.id, v.version, v.document, v.author_id, v.created_at FROM {versions} v'
            f' JOIN tenant_policy p ON p.{column} = v.{column} ORDER BY v.id'
        ))

    if _postgresql():
        _notify_on('tenant_policy')
    # Their NOTIFY triggers go with them.
    with op.batch_alter_table('policy_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_version_project_id'))
    with op.batch_alter_table('domain_policy_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_domain_policy_version_domain_id'))
    for active, versions, _, _ in OLD_PAIRS:
        op.drop_table(versions)
        op.drop_table(active)


def downgrade():
    for active, versions, column, parent in OLD_PAIRS:
        op.create_table(active,
        sa.Column(column, sa.String(length=64), nullable=False),
        sa.Column('active_version', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint([column], [f'{parent}.id'], name=op.f(f'fk_{active}_{column}_{parent}'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint(column, name=op.f(f'pk_{active}'))
        )
        op.create_table(versions,
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column(column, sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('document', sa.JSON(), nullable=False),
        sa.Column('author_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint([column], [f'{parent}.id'], name=op.f(f'fk_{versions}_{column}_{parent}'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{versions}')),
        sa.UniqueConstraint(column, 'version', name=op.f(f'uq_{versions}_{column}_version'))
        )
        with op.batch_alter_table(versions, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f'ix_{versions}_{column}'), [column], unique=False)

        op.execute(sa.text(
            f'INSERT INTO {active} ({column}, active_version, updated_at)'
            f' SELECT {column}, active_version, updated_at FROM tenant_policy'
            f' WHERE {column} IS NOT NULL'
        ))
        op.execute(sa.text(
            f'INSERT INTO {versions} ({column}, version, document, author_id, created_at)'
            f' SELECT p.{column}, v.version, v.document, v.author_id, v.created_at'
            ' FROM tenant_policy_version v JOIN tenant_policy p ON p.id = v.policy_id'
            f' WHERE p.{column} IS NOT NULL ORDER BY v.id'
        ))
        if _postgresql():
            _notify_on(active)

    with op.batch_alter_table('tenant_policy_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tenant_policy_version_policy_id'))
    op.drop_table('tenant_policy_version')
    op.drop_table('tenant_policy')
