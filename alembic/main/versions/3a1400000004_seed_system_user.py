"""seed the system service account

Data migration: the account that background jobs act as, so that their
audit_log entries have a user. Renders with ``--sql`` (offline) too.

Revision ID: 3a1400000004
Revises: 3a1400000003
Create Date: 2025-01-10 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "3a1400000004"
down_revision: str | Sequence[str] | None = "3a1400000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM_USERNAME = "system"

user_account = sa.table(
    "user_account",
    sa.column("username", sa.String()),
    sa.column("email", sa.String()),
    sa.column("display_name", sa.String()),
    # The enum type, so that the bound value is cast to user_role, not varchar.
    sa.column("role", postgresql.ENUM(name="user_role", create_type=False)),
)


def upgrade() -> None:
    """Insert the system account."""
    op.bulk_insert(
        user_account,
        [
            {
                "username": SYSTEM_USERNAME,
                "email": "system@reynard.invalid",
                "display_name": "Reynard system",
                "role": "service",
            }
        ],
    )


def downgrade() -> None:
    """Delete the system account (its audit_log entries keep a NULL user)."""
    op.execute(user_account.delete().where(user_account.c.username == SYSTEM_USERNAME))
