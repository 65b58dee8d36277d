"""create world table

Revision ID: ec5000000002
Revises: ec5000000001
Create Date: 2025-01-08 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "ec5000000002"
down_revision: str | Sequence[str] | None = "ec5000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Shipped with ec5000000001 in the first ECS release: entity is empty when this runs.
    # reynard-db: allow require-concurrent-index-creation -- entity is empty when this ships
    # reynard-db: allow constraint-missing-not-valid -- entity is empty when this ships
    # reynard-db: allow adding-foreign-key-constraint -- entity is empty when this ships
    # reynard-db: allow access-exclusive-lock -- entity is empty when this ships
    op.create_table(
        "world",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("tick", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world")),
        sa.UniqueConstraint("name", name=op.f("uq_world_name")),
    )
    op.add_column("entity", sa.Column("world_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_entity_world_id"), "entity", ["world_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_entity_world_id_world"),
        "entity",
        "world",
        ["world_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_constraint(op.f("fk_entity_world_id_world"), "entity", type_="foreignkey")
    op.drop_index(op.f("ix_entity_world_id"), table_name="entity")
    op.drop_column("entity", "world_id")
    op.drop_table("world")
