"""Unit tests run with no database server: asking for one here is a test in the wrong folder."""

import pytest


@pytest.fixture(scope="session")
def mongo_server():
    pytest.fail("a unit test asked for the test database server: it belongs in tests/integration/")
