"""add agent_relationship interaction_count and backfill it

Schema change plus data migration: the new counter is backfilled from the
interactions already recorded, in one UPDATE that also renders with ``--sql``.

Revision ID: a6e400000004
Revises: a6e400000003
Create Date: 2025-01-12 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "a6e400000004"
down_revision: str | Sequence[str] | None = "a6e400000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = sa.text(
    """
    UPDATE agent_relationship AS r
    SET interaction_count = (
        SELECT count(*)
        FROM agent_interaction AS i
        WHERE i.initiator_id = r.agent_id AND i.target_id = r.other_agent_id
    )
    """
)


def upgrade() -> None:
    """Add the counter (0 by default), then count existing interactions."""
    # reynard-db: allow access-exclusive-lock -- constant-default ADD COLUMN: brief lock, no rewrite
    op.add_column(
        "agent_relationship",
        sa.Column("interaction_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    """Drop the counter; the interactions it was computed from are untouched."""
    op.drop_column("agent_relationship", "interaction_count")
