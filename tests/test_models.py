"""The Reynard ECS models against the migrated ``ecs_e2e`` database (dogfooding the plugin).

The project's pytest settings select ``reynard_db = "ecs_e2e"``: these tests get
an already-migrated database from the plugin, as any user of it would.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pytest_reynard_db.provisioning.provision import TestDatabase
from reynard_models.ecs import (
    Agent,
    AgentTrait,
    Entity,
    Spirit,
    SpiritKind,
    TraitDefinition,
    World,
)


def test_database_is_at_every_branch_head(reynard_db: TestDatabase) -> None:
    assert set(reynard_db.head) == {"ec5000000004", "4a3e00000004", "a6e400000004"}
    with reynard_db.engine.connect() as conn:
        versions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    assert versions == set(reynard_db.head)
    assert reynard_db.entry.name == "ecs_e2e"  # the registry's name; .name is PostgreSQL's
    assert reynard_db.db is reynard_db.entry  # the older name, kept


def test_seed_data_migrations_ran(reynard_db_session: Session) -> None:
    spirits = reynard_db_session.scalars(select(Spirit.kind)).all()
    assert SpiritKind.FOX in spirits and len(spirits) == 8
    assert reynard_db_session.scalar(select(func.count()).select_from(TraitDefinition)) == 10
    assert reynard_db_session.scalar(select(World.name)) is not None


@pytest.mark.parametrize("run", [1, 2])
def test_agent_with_traits_round_trip(reynard_db_session: Session, run: int) -> None:
    """Run twice: the second run, in either order, proves the first's commit left nothing."""
    assert reynard_db_session.scalar(select(func.count()).select_from(Agent)) == 0
    trait = reynard_db_session.scalars(select(TraitDefinition)).first()
    assert trait is not None
    agent = Agent(name="Vulpine", entity=Entity())
    agent.traits.append(AgentTrait(trait=trait, value=0.9))
    reynard_db_session.add(agent)
    reynard_db_session.commit()  # a savepoint: the outer transaction is rolled back after

    loaded = reynard_db_session.scalars(select(Agent).where(Agent.name == "Vulpine")).one()
    assert loaded.trait_values() == {trait.key: 0.9}


def test_constraint_violation_is_contained(reynard_db_session: Session) -> None:
    entity = Entity()
    reynard_db_session.add_all([Agent(name="a", entity=entity), Agent(name="b", entity=entity)])
    with pytest.raises(IntegrityError):
        reynard_db_session.commit()
    reynard_db_session.rollback()
    assert reynard_db_session.scalar(select(func.count()).select_from(Agent)) == 0


@pytest.mark.parametrize("run", [1, 2])
def test_fresh_database_is_isolated(
    reynard_db_fresh: TestDatabase, reynard_db: TestDatabase, run: int
) -> None:
    """Run twice: whichever runs second gets the seed rows back, not the first's deletions."""
    count = text("SELECT count(*) FROM trait_definition")
    with reynard_db_fresh.engine.begin() as conn:
        assert conn.execute(count).scalar() == 10
        conn.execute(text("DELETE FROM agent_trait"))
        conn.execute(text("DELETE FROM trait_definition"))
        assert conn.execute(count).scalar() == 0
    with reynard_db.engine.connect() as conn:
        assert conn.execute(count).scalar() == 10
