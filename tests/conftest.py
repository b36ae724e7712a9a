"""Fixtures: a Makini sandbox on a free loopback port, and helpers to load it and compare.

The sandbox runs once per session; each test resets it to the small configuration it needs
through the admin API, so tests stay independent and fast.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import dlt
import httpx
import pytest

from makini_sandbox import ConnectionConfig, SandboxConfig, SandboxServer
from makini_source import makini_source

ENTITY_PATHS = {
    "purchase_orders": "purchase-orders",
    "vendors": "vendors",
    "materials": "materials",
    "sites": "sites",
    "assets": "assets",
    "work_orders": "work-orders",
}


def small_connections(purchase_orders: int = 25) -> List[ConnectionConfig]:
    """Two connections with colliding keys and different custom fields, a few records each."""
    return [
        ConnectionConfig(
            name="acme", token="tok_acme", purchase_orders=purchase_orders, vendors=12,
            materials=9, sites=3, assets=7, work_orders=8,
            custom_fields={"Cost Center": "string", "projectCode": "integer", "approved": "boolean"},
        ),
        ConnectionConfig(
            name="globex", token="tok_globex", system="IBM Maximo", purchase_orders=purchase_orders,
            vendors=10, materials=8, sites=2, assets=6, work_orders=5,
            custom_fields={"Cost Center": "integer", "Budget Amount": "number", "Region": "string"},
        ),
    ]


@dataclass
class Sandbox:
    """A running sandbox reset to one test's configuration."""

    url: str
    tokens: Dict[str, str]
    admin: httpx.Client

    def post(self, path: str, body: Any = None) -> Any:
        response = self.admin.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def put_record(self, connection: str, entity: str, key: str, fields: Dict[str, Any], pending: bool = False) -> Any:
        response = self.admin.put(
            f"/_admin/connections/{connection}/{entity}/{key}",
            json=fields,
            params={"pending": "true"} if pending else None,
        )
        response.raise_for_status()
        return response.json()

    def delete_record(self, connection: str, entity: str, key: str) -> Any:
        response = self.admin.delete(f"/_admin/connections/{connection}/{entity}/{key}")
        response.raise_for_status()
        return response.json()

    def sync(self, connection: str, **body: Any) -> Any:
        return self.post(f"/_admin/connections/{connection}/sync", body)

    def sync_all(self) -> None:
        for name in self.tokens:
            self.sync(name)

    def sync_status(self, connection: str) -> Dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/v1/sync-status",
            headers={"Authorization": f"Bearer {self.tokens[connection]}"},
        )
        response.raise_for_status()
        return response.json()["data"]

    def records(self, entity: str, connection: str, include_deleted: bool = True, **params: Any) -> List[Dict[str, Any]]:
        """Every record of a listing, read with plain httpx: the tests' oracle."""
        out: List[Dict[str, Any]] = []
        query: Dict[str, Any] = {"limit": 100, "include_deleted": str(include_deleted).lower(), **params}
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[connection]}"}) as client:
            while True:
                response = client.get(f"/api/v1/{ENTITY_PATHS[entity]}", params=query)
                response.raise_for_status()
                body = response.json()
                out.extend(body["data"])
                if body["next_cursor"] is None:
                    return out
                query = {"cursor": body["next_cursor"], "limit": 100}

    def snapshot(self, entity: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
        """(connection, key) -> newest record, across every connection."""
        result: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for connection in self.tokens:
            for record in self.records(entity, connection):
                result[(connection, record["key"])] = record
        return result


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(SandboxConfig(connections=small_connections()))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox_factory(sandbox_server: SandboxServer) -> Iterator[Any]:
    clients: List[httpx.Client] = []

    def make(config: Optional[SandboxConfig] = None) -> Sandbox:
        config = config or SandboxConfig(connections=small_connections())
        admin = httpx.Client(base_url=sandbox_server.url, timeout=30)
        clients.append(admin)
        admin.post("/_admin/reset", json=config.to_dict()).raise_for_status()
        return Sandbox(sandbox_server.url, {c.name: c.token for c in config.connections}, admin)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sandbox(sandbox_factory: Any) -> Sandbox:
    return sandbox_factory()


class Loader:
    """One dlt pipeline into its own DuckDB file, run against the sandbox."""

    def __init__(self, sandbox: Sandbox, workdir: Path, destination: Any = None) -> None:
        self.sandbox = sandbox
        name = f"makini_test_{uuid.uuid4().hex[:8]}"
        self.pipeline = dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(workdir / "pipelines"),
            destination=destination or dlt.destinations.duckdb(str(workdir / f"{name}.duckdb")),
            dataset_name="makini_data",
        )

    def run(self, **source_kwargs: Any) -> Any:
        source_kwargs.setdefault("base_url", self.sandbox.url)
        source_kwargs.setdefault("connections", dict(self.sandbox.tokens))
        info = self.pipeline.run(makini_source(**source_kwargs), loader_file_format="parquet")
        info.raise_on_failed_jobs()
        return info

    def query(self, sql: str) -> List[Tuple[Any, ...]]:
        with self.pipeline.sql_client() as client:
            return [tuple(row) for row in client.execute_sql(sql)]

    def table(self, name: str) -> str:
        with self.pipeline.sql_client() as client:
            return client.make_qualified_table_name(name)

    def rows(self, table: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
        """(connection_id, key) -> row; fails on duplicate keys."""
        with self.pipeline.sql_client() as client:
            with client.execute_query(f"SELECT * FROM {client.make_qualified_table_name(table)}") as cursor:
                names = [d[0] for d in cursor.description]
                result: Dict[Tuple[str, str], Dict[str, Any]] = {}
                for values in cursor.fetchall():
                    row = dict(zip(names, values))
                    key = (row["connection_id"], row["key"])
                    assert key not in result, f"duplicate row {key} in {table}"
                    result[key] = row
                return result

    def watermarks(self, resource: str) -> Dict[str, str]:
        sources = self.pipeline.state.get("sources", {})
        return sources.get("makini", {}).get("resources", {}).get(resource, {}).get("watermarks", {})


@pytest.fixture
def loader(sandbox: Sandbox, tmp_path: Path) -> Loader:
    return Loader(sandbox, tmp_path)
