"""Fixtures shared by the whole suite: a Dagster instance, the Parseable double, a PostgreSQL server, one real
Ray head."""

import dagster as dg
import pytest

from raymetrics_pipeline_tests.parseable_double import ParseableDouble


@pytest.fixture
def instance():
    """A throwaway Dagster instance (its own temporary storage)."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def parseable():
    """The Parseable test double on 127.0.0.1 with its default user admin/admin."""
    with ParseableDouble() as double:
        yield double


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server on 127.0.0.1 for the session (about 1.5 s to start). Fails, never skips, when
    the server is not installed: CI installs it, and a skip would hide the production instance untested."""
    from raymetrics_pipeline_tests.postgres_server import INSTALL_ADVICE, PostgresServer, server_binaries

    binaries = server_binaries()
    if binaries is None:
        pytest.fail(INSTALL_ADVICE)
    with PostgresServer(binaries) as server:
        yield server


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One real Ray 2.60 head for the whole test session (about 10 s to start), gone without a trace after."""
    pytest.importorskip("ray")
    from raymetrics_pipeline_tests.ray_cluster import RayHead

    with RayHead(tmp_path_factory.mktemp("rayhead"), startup_timeout=90) as head:
        yield head
    assert head.pids() == [], "Ray processes left after RayHead exit"
