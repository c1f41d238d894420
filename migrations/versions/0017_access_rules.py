"""access rules kept per user, as Keystone keeps them

An application credential's access rules were kept only on the credential, so a rule
went away with its last credential. Keystone keeps them per user until deleted (and
refuses to delete one still in use); Tempest and clients rely on it (issue 14). The
rules of today's credentials are copied in.

Revision ID: f6a8b0c30017
Revises: e5f7a9b20016
Create Date: 2026-12-06 23:00:00.000000

"""
import hashlib
import json

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f6a8b0c30017'
down_revision = 'e5f7a9b20016'
branch_labels = None
depends_on = None


def _rule_id(rule):
    parts = (rule['service'], rule['method'], rule['path'])
    return hashlib.sha256('\x1f'.join(parts).encode()).hexdigest()[:32]


def upgrade():
    table = op.create_table('user_access_rule',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('service', sa.String(length=255), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], name=op.f('fk_user_access_rule_user_id_user_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'id', name=op.f('pk_user_access_rule'))
    )
    rows = {}
    for user_id, rules in op.get_bind().execute(
            sa.text('SELECT user_id, access_rules FROM application_credential')):
        if isinstance(rules, str):
            rules = json.loads(rules)
        for rule in rules or ():
            key = (user_id, _rule_id(rule))
            rows[key] = {'user_id': user_id, 'id': key[1], 'service': rule['service'],
                         'method': rule['method'], 'path': rule['path']}
    if rows:
        op.bulk_insert(table, list(rows.values()))


def downgrade():
    op.drop_table('user_access_rule')
