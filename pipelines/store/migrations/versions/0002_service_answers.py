"""regulation service answers: message context, prediction reply/strategy details, degraded flag

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('context', sa.JSON(), nullable=True))

    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topic', sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column('escalate', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column('reply', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reply_source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column('degraded', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        for column in ('degraded', 'request_id', 'reply_source', 'reply', 'escalate', 'topic'):
            batch_op.drop_column(column)
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('context')
