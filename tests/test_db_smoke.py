from __future__ import annotations

import pytest

from db.store import open_store


@pytest.mark.postgres
def test_postgres_fixture_gives_a_migratable_database(pg_url: str) -> None:
    store = open_store(pg_url)
    assert store.finished_keys() == set()
    store.dispose()
