"""add generated_name usage_count

Revision ID: 4a3e00000004
Revises: 4a3e00000003
Create Date: 2025-01-11 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "4a3e00000004"
down_revision: str | Sequence[str] | None = "4a3e00000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # reynard-db: allow access-exclusive-lock -- constant-default ADD COLUMN: brief lock, no rewrite
    op.add_column(
        "generated_name",
        sa.Column("usage_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("generated_name", "usage_count")
