"""create agent_relationship and agent_interaction tables

Revision ID: a6e400000003
Revises: a6e400000002
Create Date: 2025-01-09 12:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "a6e400000003"
down_revision: str | Sequence[str] | None = "a6e400000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Created and dropped explicitly (create_type=False), so that create_table and
# drop_table never do it implicitly and downgrade -> upgrade always works.
interaction_kind = postgresql.ENUM(
    "greeting",
    "conversation",
    "trade",
    "cooperation",
    "conflict",
    "social",
    name="interaction_kind",
    create_type=False,
)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "agent_relationship",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("other_agent_id", sa.Integer(), nullable=False),
        sa.Column("strength", sa.Double(), server_default=sa.text("0"), nullable=False),
        sa.Column("trust", sa.Double(), server_default=sa.text("0.5"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "agent_id <> other_agent_id", name=op.f("ck_agent_relationship_not_self")
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
            name=op.f("fk_agent_relationship_agent_id_agent"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["other_agent_id"],
            ["agent.id"],
            name=op.f("fk_agent_relationship_other_agent_id_agent"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_relationship")),
        sa.UniqueConstraint(
            "agent_id", "other_agent_id", name=op.f("uq_agent_relationship_agent_id_other_agent_id")
        ),
    )
    op.create_index(
        op.f("ix_agent_relationship_other_agent_id"),
        "agent_relationship",
        ["other_agent_id"],
        unique=False,
    )
    interaction_kind.create(op.get_bind(), checkfirst=False)
    op.create_table(
        "agent_interaction",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("initiator_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("kind", interaction_kind, nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["initiator_id"],
            ["agent.id"],
            name=op.f("fk_agent_interaction_initiator_id_agent"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["agent.id"],
            name=op.f("fk_agent_interaction_target_id_agent"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_interaction")),
    )
    op.create_index(
        op.f("ix_agent_interaction_initiator_id_occurred_at"),
        "agent_interaction",
        ["initiator_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_agent_interaction_target_id"), "agent_interaction", ["target_id"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_agent_interaction_target_id"), table_name="agent_interaction")
    op.drop_index(
        op.f("ix_agent_interaction_initiator_id_occurred_at"), table_name="agent_interaction"
    )
    op.drop_table("agent_interaction")
    interaction_kind.drop(op.get_bind(), checkfirst=False)
    op.drop_index(op.f("ix_agent_relationship_other_agent_id"), table_name="agent_relationship")
    op.drop_table("agent_relationship")
