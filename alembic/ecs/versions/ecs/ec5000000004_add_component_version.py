"""add component version counter

Revision ID: ec5000000004
Revises: ec5000000003
Create Date: 2025-01-10 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ec5000000004"
down_revision: str | Sequence[str] | None = "ec5000000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # reynard-db: allow access-exclusive-lock -- constant-default ADD COLUMN: brief lock, no rewrite
    op.add_column(
        "component",
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("component", "version")
