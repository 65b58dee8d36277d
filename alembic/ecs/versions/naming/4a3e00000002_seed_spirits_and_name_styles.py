"""seed spirits and name styles

Data migration: the naming configuration every world starts with. Uses
``op.bulk_insert`` so that ``--sql`` (offline) renders it too.

Revision ID: 4a3e00000002
Revises: 4a3e00000001
Create Date: 2025-01-07 11:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "4a3e00000002"
down_revision: str | Sequence[str] | None = "4a3e00000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPIRITS: list[dict[str, str]] = [
    {"kind": "fox", "display_name": "Fox", "description": "Cunning, adaptable, strategic."},
    {"kind": "wolf", "display_name": "Wolf", "description": "Loyal, protective, pack-minded."},
    {"kind": "otter", "display_name": "Otter", "description": "Playful, curious, social."},
    {"kind": "eagle", "display_name": "Eagle", "description": "Far-sighted and free."},
    {"kind": "lion", "display_name": "Lion", "description": "Proud, brave, a leader."},
    {"kind": "tiger", "display_name": "Tiger", "description": "Fierce and independent."},
    {"kind": "dragon", "display_name": "Dragon", "description": "Ancient, wise, powerful."},
    {"kind": "phoenix", "display_name": "Phoenix", "description": "Renewal and resilience."},
]

NAME_STYLES: list[dict[str, str]] = [
    {"key": "foundation", "display_name": "Foundation", "description": "Asimov-inspired."},
    {"key": "exo", "display_name": "Exo", "description": "Combat and operations."},
    {"key": "hybrid", "display_name": "Hybrid", "description": "Mythological and historical."},
    {"key": "cyberpunk", "display_name": "Cyberpunk", "description": "Tech and neon."},
    {"key": "mythological", "display_name": "Mythological", "description": "Gods and legends."},
    {"key": "scientific", "display_name": "Scientific", "description": "Taxonomy and terms."},
]

spirit = sa.table(
    "spirit",
    # The enum type, so that the bound value is cast to spirit_kind, not varchar.
    sa.column("kind", postgresql.ENUM(name="spirit_kind", create_type=False)),
    sa.column("display_name", sa.String()),
    sa.column("description", sa.Text()),
)
name_style = sa.table(
    "name_style",
    sa.column("key", sa.String()),
    sa.column("display_name", sa.String()),
    sa.column("description", sa.Text()),
)


def upgrade() -> None:
    """Insert the default spirits and name styles."""
    op.bulk_insert(spirit, SPIRITS)
    op.bulk_insert(name_style, NAME_STYLES)


def downgrade() -> None:
    """Delete exactly the rows that upgrade inserted."""
    op.execute(name_style.delete().where(name_style.c.key.in_([s["key"] for s in NAME_STYLES])))
    op.execute(
        spirit.delete().where(
            spirit.c.kind.in_([s["kind"] for s in SPIRITS]),
        )
    )
