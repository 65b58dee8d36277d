"""seed the default world and move unassigned entities into it

Data migration. Plain SQL constructs with no reads into Python, so that
``--sql`` (offline) renders it too.

Revision ID: ec5000000003
Revises: ec5000000002
Create Date: 2025-01-08 11:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ec5000000003"
down_revision: str | Sequence[str] | None = "ec5000000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_WORLD = "default"

world = sa.table("world", sa.column("id", sa.Integer()), sa.column("name", sa.String()))
entity = sa.table("entity", sa.column("world_id", sa.Integer()))
default_world_id = sa.select(world.c.id).where(world.c.name == DEFAULT_WORLD).scalar_subquery()


def upgrade() -> None:
    """Create the default world; every entity without a world joins it."""
    op.bulk_insert(world, [{"name": DEFAULT_WORLD}])
    op.execute(entity.update().where(entity.c.world_id.is_(None)).values(world_id=default_world_id))


def downgrade() -> None:
    """Detach the default world's entities, then delete the default world."""
    op.execute(entity.update().where(entity.c.world_id == default_world_id).values(world_id=None))
    op.execute(world.delete().where(world.c.name == DEFAULT_WORLD))
