"""Shared fixtures: throwaway MariaDB, Redis and osmem servers (see `rig`).

Session fixtures (`mariadb`, `redis_server`, `osmem`) start one server each, on first use, for
the whole run. A test may stop or kill them; the per-test helpers (`fresh_db`, `redis_url`,
`es_url`, `es_index`) start them again if needed. Tests that need a server of their own (other
settings, or one to break without disturbing the rest) use the `make_*` factories.

A server whose program is not installed skips the test with the reason, except under CI
(`CI=true`), where a missing server is an error: CI must never pass by skipping.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from rig import BinaryMissing, MariaDB, Osmem, Redis, Server

S = TypeVar("S", bound=Server)

# Redis database 0 is left to tests that take `redis_server` directly.
_REDIS_DATABASES = itertools.cycle(range(1, 16))


def _build(factory: Callable[[], S]) -> S:
    try:
        return factory()
    except BinaryMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: integration tests must not be skipped)", pytrace=False)
        pytest.skip(str(exc))


def _unique_name(request: pytest.FixtureRequest, prefix: str) -> str:
    """A short lowercase name made of the test's name and a random suffix."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    return f"{prefix}_{base}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """The session's MariaDB (ROW binlog, FULL image and metadata; user cdc/cdc)."""
    server = _build(MariaDB)
    with server:
        yield server.start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """The session's Redis, without persistence."""
    server = _build(Redis)
    with server:
        yield server.start()


@pytest.fixture(scope="session")
def osmem() -> Iterator[Osmem]:
    """The session's osmem-server (in-memory OpenSearch API)."""
    server = _build(Osmem)
    with server:
        yield server.start()


@pytest.fixture
def fresh_db(mariadb: MariaDB, request: pytest.FixtureRequest) -> Iterator[str]:
    """Name of a new, empty database on the session MariaDB; dropped after the test."""
    name = _unique_name(request, "t")
    mariadb.start().sql(f"CREATE DATABASE `{name}`")
    yield name
    mariadb.start().sql(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def redis_url(redis_server: Redis) -> Iterator[str]:
    """URL of an empty Redis database on the session server, flushed after the test."""
    db = next(_REDIS_DATABASES)
    redis_server.start()
    with redis_server.client(db) as client:
        client.flushdb()
    yield f"{redis_server.url}/{db}"
    redis_server.start()
    with redis_server.client(db) as client:
        client.flushdb()


@pytest.fixture
def es_url(osmem: Osmem) -> str:
    """URL of the session's osmem-server; tests keep to index names of their own."""
    return osmem.start().url


@pytest.fixture
def es_index(osmem: Osmem, request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique index name on the session osmem (not created); deleted after the test."""
    name = _unique_name(request, "idx")
    yield name
    osmem.start().delete_index(name)


def _factory(cls: Callable[..., S]) -> Iterator[Callable[..., S]]:
    servers: list[S] = []

    def make(**kwargs: Any) -> S:
        server = _build(lambda: cls(**kwargs))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def make_mariadb() -> Iterator[Callable[..., MariaDB]]:
    """Factory of private, started MariaDB servers (`extra_args=[...]`), closed after the test."""
    yield from _factory(MariaDB)


@pytest.fixture
def make_redis() -> Iterator[Callable[..., Redis]]:
    """Factory of private, started Redis servers (`appendonly=True`), closed after the test."""
    yield from _factory(Redis)


@pytest.fixture
def make_osmem() -> Iterator[Callable[..., Osmem]]:
    """Factory of private, started osmem servers, closed after the test."""
    yield from _factory(Osmem)
