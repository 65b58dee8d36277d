"""create spirit and name_style tables

Starts the ``naming`` branch. It depends on the entity table (generated names
can be given to entities).

Revision ID: 4a3e00000001
Revises:
Create Date: 2025-01-07 10:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "4a3e00000001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("naming",)
depends_on: str | Sequence[str] | None = "ec5000000001"

# Created and dropped explicitly (create_type=False), so that create_table and
# drop_table never do it implicitly and downgrade -> upgrade always works.
spirit_kind = postgresql.ENUM(
    "fox",
    "wolf",
    "otter",
    "eagle",
    "lion",
    "tiger",
    "dragon",
    "phoenix",
    name="spirit_kind",
    create_type=False,
)


def upgrade() -> None:
    """Upgrade schema."""
    spirit_kind.create(op.get_bind(), checkfirst=False)
    op.create_table(
        "spirit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", spirit_kind, nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spirit")),
        sa.UniqueConstraint("kind", name=op.f("uq_spirit_kind")),
    )
    op.create_table(
        "name_style",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_name_style")),
        sa.UniqueConstraint("key", name=op.f("uq_name_style_key")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("name_style")
    op.drop_table("spirit")
    spirit_kind.drop(op.get_bind(), checkfirst=False)
