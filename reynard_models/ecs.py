"""Models of the ECS world simulation database (``reynard_ecs``).

Three groups, one per branch of the ``alembic/ecs`` tree:

- ``ecs``: worlds, entities and their components;
- ``naming``: spirits, name styles and the names generated from them;
- ``agents``: agents (one per entity), traits, relationships, interactions.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from reynard_models.base import enum_values, make_metadata

__all__ = [
    "Agent",
    "AgentInteraction",
    "AgentRelationship",
    "AgentTrait",
    "Component",
    "EcsBase",
    "Entity",
    "GeneratedName",
    "InteractionKind",
    "NameStyle",
    "Spirit",
    "SpiritKind",
    "TraitDefinition",
    "World",
]

EMPTY_JSON_OBJECT = text("'{}'::jsonb")


class EcsBase(DeclarativeBase):
    """Declarative base of the ECS database; ``EcsBase.metadata`` is its schema."""

    metadata = make_metadata()
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        datetime: DateTime(timezone=True),
    }


class SpiritKind(enum.StrEnum):
    """The animal spirit a name (and its bearer) belongs to."""

    FOX = "fox"
    WOLF = "wolf"
    OTTER = "otter"
    EAGLE = "eagle"
    LION = "lion"
    TIGER = "tiger"
    DRAGON = "dragon"
    PHOENIX = "phoenix"


class InteractionKind(enum.StrEnum):
    """What happened between two agents."""

    GREETING = "greeting"
    CONVERSATION = "conversation"
    TRADE = "trade"
    COOPERATION = "cooperation"
    CONFLICT = "conflict"
    SOCIAL = "social"


spirit_kind_enum = Enum(SpiritKind, name="spirit_kind", values_callable=enum_values)
interaction_kind_enum = Enum(InteractionKind, name="interaction_kind", values_callable=enum_values)


# --------------------------------------------------------------------------
# ecs branch
# --------------------------------------------------------------------------


class World(EcsBase):
    """A simulated world; entities live in at most one world."""

    __tablename__ = "world"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tick: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    settings: Mapped[dict[str, Any]] = mapped_column(server_default=EMPTY_JSON_OBJECT)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    entities: Mapped[list[Entity]] = relationship(back_populates="world")


class Entity(EcsBase):
    """An ECS entity: an identity that components attach to."""

    __tablename__ = "entity"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = mapped_column(
        Uuid, unique=True, server_default=text("gen_random_uuid()")
    )
    world_id: Mapped[int | None] = mapped_column(
        ForeignKey("world.id", ondelete="SET NULL"), index=True
    )
    is_active: Mapped[bool] = mapped_column(server_default=true())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    world: Mapped[World | None] = relationship(back_populates="entities")
    components: Mapped[list[Component]] = relationship(
        back_populates="entity", cascade="all, delete-orphan", passive_deletes=True
    )
    agent: Mapped[Agent | None] = relationship(
        back_populates="entity", cascade="all, delete-orphan", passive_deletes=True
    )
    names: Mapped[list[GeneratedName]] = relationship(back_populates="entity")


class Component(EcsBase):
    """One component (typed JSON data) of an entity; one per type and entity."""

    __tablename__ = "component"
    __table_args__ = (UniqueConstraint("entity_id", "component_type"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"))
    component_type: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(server_default=EMPTY_JSON_OBJECT)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=func.now())

    entity: Mapped[Entity] = relationship(back_populates="components")


# --------------------------------------------------------------------------
# naming branch
# --------------------------------------------------------------------------


class Spirit(EcsBase):
    """Naming configuration of one animal spirit."""

    __tablename__ = "spirit"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[SpiritKind] = mapped_column(spirit_kind_enum, unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    generated_names: Mapped[list[GeneratedName]] = relationship(back_populates="spirit")


class NameStyle(EcsBase):
    """A naming style (e.g. ``foundation``, ``cyberpunk``) and its settings."""

    __tablename__ = "name_style"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(server_default=EMPTY_JSON_OBJECT)
    is_active: Mapped[bool] = mapped_column(server_default=true())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    generated_names: Mapped[list[GeneratedName]] = relationship(back_populates="name_style")


class GeneratedName(EcsBase):
    """A name generated for a spirit in a style, optionally given to an entity."""

    __tablename__ = "generated_name"
    __table_args__ = (UniqueConstraint("spirit_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    spirit_id: Mapped[int] = mapped_column(ForeignKey("spirit.id"))
    name_style_id: Mapped[int] = mapped_column(ForeignKey("name_style.id"), index=True)
    entity_id: Mapped[int | None] = mapped_column(
        ForeignKey("entity.id", ondelete="SET NULL"), index=True
    )
    usage_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    spirit: Mapped[Spirit] = relationship(back_populates="generated_names")
    name_style: Mapped[NameStyle] = relationship(back_populates="generated_names")
    entity: Mapped[Entity | None] = relationship(back_populates="names")


# --------------------------------------------------------------------------
# agents branch
# --------------------------------------------------------------------------


class Agent(EcsBase):
    """An agent: the simulated being behind one entity."""

    __tablename__ = "agent"

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entity.id", ondelete="CASCADE"), unique=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    level: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    attributes: Mapped[dict[str, Any]] = mapped_column(server_default=EMPTY_JSON_OBJECT)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=func.now())

    entity: Mapped[Entity] = relationship(back_populates="agent")
    traits: Mapped[list[AgentTrait]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", passive_deletes=True
    )
    relationships: Mapped[list[AgentRelationship]] = relationship(
        foreign_keys="AgentRelationship.agent_id",
        back_populates="agent",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    interactions_initiated: Mapped[list[AgentInteraction]] = relationship(
        foreign_keys="AgentInteraction.initiator_id",
        back_populates="initiator",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    interactions_received: Mapped[list[AgentInteraction]] = relationship(
        foreign_keys="AgentInteraction.target_id",
        back_populates="target",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def trait_values(self) -> dict[str, float]:
        """Return this agent's traits as ``{trait key: value}``."""
        return {agent_trait.trait.key: agent_trait.value for agent_trait in self.traits}


class TraitDefinition(EcsBase):
    """A trait agents can have (e.g. ``cunning``), with its default value."""

    __tablename__ = "trait_definition"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    default_value: Mapped[float] = mapped_column(Double, server_default=text("0.5"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    agent_traits: Mapped[list[AgentTrait]] = relationship(
        back_populates="trait", passive_deletes=True
    )


class AgentTrait(EcsBase):
    """Association object: the value (0..1) of one trait for one agent."""

    __tablename__ = "agent_trait"
    __table_args__ = (CheckConstraint("value >= 0 AND value <= 1", name="value_range"),)

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agent.id", ondelete="CASCADE"), primary_key=True
    )
    trait_id: Mapped[int] = mapped_column(
        ForeignKey("trait_definition.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )
    value: Mapped[float] = mapped_column(Double, server_default=text("0.5"))

    agent: Mapped[Agent] = relationship(back_populates="traits")
    trait: Mapped[TraitDefinition] = relationship(back_populates="agent_traits")


class AgentRelationship(EcsBase):
    """How one agent regards another (directed: ``agent`` -> ``other_agent``)."""

    __tablename__ = "agent_relationship"
    __table_args__ = (
        UniqueConstraint("agent_id", "other_agent_id"),
        CheckConstraint("agent_id <> other_agent_id", name="not_self"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    other_agent_id: Mapped[int] = mapped_column(
        ForeignKey("agent.id", ondelete="CASCADE"), index=True
    )
    strength: Mapped[float] = mapped_column(Double, server_default=text("0"))
    trust: Mapped[float] = mapped_column(Double, server_default=text("0.5"))
    interaction_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime | None] = mapped_column(onupdate=func.now())

    agent: Mapped[Agent] = relationship(foreign_keys=[agent_id], back_populates="relationships")
    other_agent: Mapped[Agent] = relationship(foreign_keys=[other_agent_id])


class AgentInteraction(EcsBase):
    """One interaction an agent initiated towards another."""

    __tablename__ = "agent_interaction"
    __table_args__ = (Index(None, "initiator_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    initiator_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"), index=True)
    kind: Mapped[InteractionKind] = mapped_column(interaction_kind_enum)
    payload: Mapped[dict[str, Any]] = mapped_column(server_default=EMPTY_JSON_OBJECT)
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())

    initiator: Mapped[Agent] = relationship(
        foreign_keys=[initiator_id], back_populates="interactions_initiated"
    )
    target: Mapped[Agent] = relationship(
        foreign_keys=[target_id], back_populates="interactions_received"
    )
