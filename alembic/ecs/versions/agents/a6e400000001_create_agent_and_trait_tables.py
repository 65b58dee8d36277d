"""create agent, trait_definition and agent_trait tables

Starts the ``agents`` branch. It depends on the entity table: every agent is
an entity.

Revision ID: a6e400000001
Revises:
Create Date: 2025-01-07 12:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "a6e400000001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("agents",)
depends_on: str | Sequence[str] | None = "ec5000000001"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "agent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("level", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["entity_id"], ["entity.id"], name=op.f("fk_agent_entity_id_entity"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent")),
        sa.UniqueConstraint("entity_id", name=op.f("uq_agent_entity_id")),
    )
    op.create_index(op.f("ix_agent_name"), "agent", ["name"], unique=False)
    op.create_table(
        "trait_definition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("default_value", sa.Double(), server_default=sa.text("0.5"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trait_definition")),
        sa.UniqueConstraint("key", name=op.f("uq_trait_definition_key")),
    )
    op.create_index(
        op.f("ix_trait_definition_category"), "trait_definition", ["category"], unique=False
    )
    op.create_table(
        "agent_trait",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("trait_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), server_default=sa.text("0.5"), nullable=False),
        sa.CheckConstraint("value >= 0 AND value <= 1", name=op.f("ck_agent_trait_value_range")),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
            name=op.f("fk_agent_trait_agent_id_agent"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trait_id"],
            ["trait_definition.id"],
            name=op.f("fk_agent_trait_trait_id_trait_definition"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "trait_id", name=op.f("pk_agent_trait")),
    )
    op.create_index(op.f("ix_agent_trait_trait_id"), "agent_trait", ["trait_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_agent_trait_trait_id"), table_name="agent_trait")
    op.drop_table("agent_trait")
    op.drop_index(op.f("ix_trait_definition_category"), table_name="trait_definition")
    op.drop_table("trait_definition")
    op.drop_index(op.f("ix_agent_name"), table_name="agent")
    op.drop_table("agent")
