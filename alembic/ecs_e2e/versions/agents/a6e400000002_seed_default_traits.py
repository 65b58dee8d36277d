"""seed default trait definitions

Data migration: the personality and physical traits every agent can have.
Uses ``op.bulk_insert`` so that ``--sql`` (offline) renders it too.

Revision ID: a6e400000002
Revises: a6e400000001
Create Date: 2025-01-07 13:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "a6e400000002"
down_revision: str | Sequence[str] | None = "a6e400000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSONALITY = ("dominance", "loyalty", "cunning", "aggression", "intelligence", "creativity")
PHYSICAL = ("size", "strength", "agility", "endurance")

TRAITS: list[dict[str, str]] = [
    {"key": key, "display_name": key.capitalize(), "category": "personality"} for key in PERSONALITY
] + [{"key": key, "display_name": key.capitalize(), "category": "physical"} for key in PHYSICAL]

trait_definition = sa.table(
    "trait_definition",
    sa.column("key", sa.String()),
    sa.column("display_name", sa.String()),
    sa.column("category", sa.String()),
)


def upgrade() -> None:
    """Insert the default trait definitions (default_value from the server default)."""
    op.bulk_insert(trait_definition, TRAITS)


def downgrade() -> None:
    """Delete exactly the rows that upgrade inserted (agent_trait rows cascade)."""
    keys = [trait["key"] for trait in TRAITS]
    op.execute(trait_definition.delete().where(trait_definition.c.key.in_(keys)))
