"""create generated_name table

Revision ID: 4a3e00000003
Revises: 4a3e00000002
Create Date: 2025-01-09 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "4a3e00000003"
down_revision: str | Sequence[str] | None = "4a3e00000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "generated_name",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spirit_id", sa.Integer(), nullable=False),
        sa.Column("name_style_id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["entity.id"],
            name=op.f("fk_generated_name_entity_id_entity"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["name_style_id"],
            ["name_style.id"],
            name=op.f("fk_generated_name_name_style_id_name_style"),
        ),
        sa.ForeignKeyConstraint(
            ["spirit_id"], ["spirit.id"], name=op.f("fk_generated_name_spirit_id_spirit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generated_name")),
        sa.UniqueConstraint("spirit_id", "name", name=op.f("uq_generated_name_spirit_id_name")),
    )
    op.create_index(op.f("ix_generated_name_name"), "generated_name", ["name"], unique=False)
    op.create_index(
        op.f("ix_generated_name_name_style_id"), "generated_name", ["name_style_id"], unique=False
    )
    op.create_index(
        op.f("ix_generated_name_entity_id"), "generated_name", ["entity_id"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_generated_name_entity_id"), table_name="generated_name")
    op.drop_index(op.f("ix_generated_name_name_style_id"), table_name="generated_name")
    op.drop_index(op.f("ix_generated_name_name"), table_name="generated_name")
    op.drop_table("generated_name")
