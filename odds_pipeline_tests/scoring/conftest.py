"""Fixtures of the scoring tests."""

import duckdb
import pytest

from odds_pipeline.ingestion import store


@pytest.fixture
def con():
    """An in-memory warehouse with the canonical schema, in UTC."""
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone='UTC'")
    store.ensure_schema(connection)
    yield connection
    connection.close()
