"""Models of the main application database (``reynard``): accounts and auditing."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, String, func, text, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from reynard_models.base import enum_values, make_metadata

__all__ = ["ApiKey", "AuditLog", "MainBase", "UserAccount", "UserRole"]


class MainBase(DeclarativeBase):
    """Declarative base of the main database; ``MainBase.metadata`` is its schema."""

    metadata = make_metadata()
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        list[str]: JSONB,
        datetime: DateTime(timezone=True),
    }


class UserRole(enum.StrEnum):
    """What a user account may do."""

    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"


user_role_enum = Enum(UserRole, name="user_role", values_callable=enum_values)


class UserAccount(MainBase):
    """A person or service that signs in to Reynard."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(128))
    role: Mapped[UserRole] = mapped_column(user_role_enum, server_default=text("'user'"))
    is_active: Mapped[bool] = mapped_column(server_default=true())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=func.now())

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    audit_entries: Mapped[list[AuditLog]] = relationship(back_populates="user")


class ApiKey(MainBase):
    """An API key of a user; only its hash and a short prefix are stored."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str] = mapped_column(String(12), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]] = mapped_column(server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[UserAccount] = relationship(back_populates="api_keys")


class AuditLog(MainBase):
    """An append-only record of who did what."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), index=True)

    user: Mapped[UserAccount | None] = relationship(back_populates="audit_entries")
