"""Fixtures: a Makini sandbox on a free loopback port, and helpers to load it and compare.

The sandbox runs once per session; each test resets it to the small configuration it needs
through the admin API, so tests stay independent and fast.
"""

from __future__ import annotations

import os

# With Airflow installed, dlt asks Airflow Variables on every config lookup (seconds per run
# and noisy logs); these tests configure everything through arguments and environment
# variables. Set before dlt reads its configuration.
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

import subprocess
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import dlt
import httpx
import pendulum
import pytest

from makini_sandbox import ConnectionConfig, SandboxConfig, SandboxServer
from makini_source import makini_source
from makini_source.catalogue import default_entities

# the entities each family serves in the unified dialect (v1 serves all six to everyone)
FAMILY_ENTITIES = {
    "erp": {"purchase_orders", "vendors", "materials", "sites"},
    "eam": {"purchase_orders", "vendors", "materials", "sites", "assets", "work_orders"},
}

ENTITY_PATHS = {
    "purchase_orders": "purchase-orders",
    "vendors": "vendors",
    "materials": "materials",
    "sites": "sites",
    "assets": "assets",
    "work_orders": "work-orders",
}


def run_captured(
    command: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs a command to its end, its output captured as text; the caller checks the exit
    status (many tests expect a failure)."""
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def small_connections(purchase_orders: int = 25) -> list[ConnectionConfig]:
    """Two connections with colliding keys and different custom fields, a few records each."""
    return [
        ConnectionConfig(
            name="acme",
            token="tok_acme",
            purchase_orders=purchase_orders,
            vendors=12,
            materials=9,
            sites=3,
            assets=7,
            work_orders=8,
            custom_fields={
                "Cost Center": "string",
                "projectCode": "integer",
                "approved": "boolean",
            },
        ),
        ConnectionConfig(
            name="globex",
            token="tok_globex",
            system="IBM Maximo",
            purchase_orders=purchase_orders,
            vendors=10,
            materials=8,
            sites=2,
            assets=6,
            work_orders=5,
            custom_fields={"Cost Center": "integer", "Budget Amount": "number", "Region": "string"},
        ),
    ]


@dataclass
class Sandbox:
    """A running sandbox reset to one test's configuration."""

    url: str
    tokens: dict[str, str]
    admin: httpx.Client

    def post(self, path: str, body: Any = None) -> Any:
        response = self.admin.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def put_record(
        self, connection: str, entity: str, key: str, fields: dict[str, Any], pending: bool = False
    ) -> Any:
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

    def admin_connections(self) -> list[dict[str, Any]]:
        """The sandbox's view of every connection (profile, sync, counts)."""
        response = self.admin.get("/_admin/connections")
        response.raise_for_status()
        return response.json()["data"]  # type: ignore[no-any-return]

    def sync_all(self) -> None:
        for name in self.tokens:
            self.sync(name)

    def sync_status(self, connection: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/v1/sync-status",
            headers={"Authorization": f"Bearer {self.tokens[connection]}"},
        )
        response.raise_for_status()
        return response.json()["data"]

    def records(
        self, entity: str, connection: str, include_deleted: bool = True, **params: Any
    ) -> list[dict[str, Any]]:
        """Every record of a listing, read with plain httpx: the tests' oracle."""
        out: list[dict[str, Any]] = []
        query: dict[str, Any] = {
            "limit": 100,
            "include_deleted": str(include_deleted).lower(),
            **params,
        }
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[connection]}"}
        ) as client:
            while True:
                response = client.get(f"/api/v1/{ENTITY_PATHS[entity]}", params=query)
                response.raise_for_status()
                body = response.json()
                out.extend(body["data"])
                if body["next_cursor"] is None:
                    return out
                query = {"cursor": body["next_cursor"], "limit": 100}

    def snapshot(self, entity: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(connection, key) -> newest record, across every connection."""
        result: dict[tuple[str, str], dict[str, Any]] = {}
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
    clients: list[httpx.Client] = []

    def make(config: SandboxConfig | None = None) -> Sandbox:
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

    def __init__(
        self, sandbox: Sandbox, workdir: Path, destination: Any = None, dialect: str = "v1"
    ) -> None:
        self.sandbox = sandbox
        self.dialect = dialect
        name = f"makini_test_{uuid.uuid4().hex[:8]}"
        self.pipeline = dlt.pipeline(
            pipeline_name=name,
            pipelines_dir=str(workdir / "pipelines"),
            destination=destination or dlt.destinations.duckdb(str(workdir / f"{name}.duckdb")),
            dataset_name="makini_data",
        )

    def source(self, **source_kwargs: Any) -> Any:
        """`makini_source` for the sandbox: its URL, every token, this loader's dialect."""
        source_kwargs.setdefault("base_url", self.sandbox.url)
        source_kwargs.setdefault("connections", dict(self.sandbox.tokens))
        source_kwargs.setdefault("dialect", self.dialect)
        return makini_source(**source_kwargs)

    def run(self, **source_kwargs: Any) -> Any:
        """One run; returns dlt's load info."""
        info = self.pipeline.run(self.source(**source_kwargs), loader_file_format="parquet")
        info.raise_on_failed_jobs()
        return info

    def run_source(self, **source_kwargs: Any) -> Any:
        """One run; returns the source (its connections, notes and failures)."""
        source = self.source(**source_kwargs)
        self.pipeline.run(source, loader_file_format="parquet").raise_on_failed_jobs()
        return source

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.pipeline.sql_client() as client:
            return [tuple(row) for row in client.execute_sql(sql)]

    def table(self, name: str) -> str:
        with self.pipeline.sql_client() as client:
            return client.make_qualified_table_name(name)

    def rows(self, table: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(connection_id, key) -> row; fails on duplicate keys; empty if never loaded."""
        from dlt.destinations.exceptions import DatabaseUndefinedRelation

        with self.pipeline.sql_client() as client:
            try:
                with client.execute_query(
                    f"SELECT * FROM {client.make_qualified_table_name(table)}"
                ) as cursor:
                    names = [d[0] for d in cursor.description]
                    return _rows_by_key(table, names, cursor.fetchall())
            except DatabaseUndefinedRelation:
                return {}

    def watermarks(self, resource: str) -> dict[str, str]:
        sources = self.pipeline.state.get("sources", {})
        return (
            sources.get("makini", {}).get("resources", {}).get(resource, {}).get("watermarks", {})
        )


# --- Real destinations: DuckDB files and a throwaway PostgreSQL cluster -----------------------
#
# `loader` runs against DuckDB for every test; tests marked `@pytest.mark.postgres` run a second
# time against a real PostgreSQL server (Debian's `postgresql` package: initdb/pg_ctl from
# /usr/lib/postgresql/*/bin), started once per session on a free loopback port in a temp dir.
# Without the binaries those runs are skipped, unless MAKINI_REQUIRE_POSTGRES=1 (CI), which
# makes them fail. MAKINI_TEST_DESTINATIONS=duckdb,postgres runs every `loader` test on both.

import glob
import os
import pwd
import re
import shutil
import socket
import tempfile

POSTGRES_USER = "postgres"
POSTGRES_PASSWORD = "makini-test-pw"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: also run this `loader` test against a real PostgreSQL server"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "loader" not in metafunc.fixturenames:
        return
    forced = os.environ.get("MAKINI_TEST_DESTINATIONS")
    if forced:
        destinations = [d.strip() for d in forced.split(",") if d.strip()]
    else:
        destinations = ["duckdb"]
        if metafunc.definition.get_closest_marker("postgres"):
            destinations.append("postgres")
    metafunc.parametrize("loader", destinations, indirect=True)


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout), or None."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(
            os.access(Path(candidate) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")
        ):
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only.

    Postgres refuses to run as root, so as root the server runs as the `postgres` system user
    (`runuser -u postgres --`), in a temp dir owned by that user.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="makini-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(POSTGRES_USER)  # KeyError: no `postgres` user
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", POSTGRES_USER, "--"]
        self._counter = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = run_captured([*self._as_user, *args], self.root)
        if check:
            done.check_returncode()
        return done

    def start(self) -> PostgresServer:
        password_file = self.root / "pw"
        password_file.write_text(POSTGRES_PASSWORD + "\n")
        if self._as_user:
            shutil.chown(password_file, POSTGRES_USER, POSTGRES_USER)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            POSTGRES_USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        last_error = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = _free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            result = self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
                check=False,
            )
            if result.returncode == 0:
                self.create_database("makini_test")
                return self
            log = self.root / "log"
            last_error = result.stderr + (log.read_text() if log.exists() else "")
        raise RuntimeError(f"PostgreSQL did not start:\n{last_error[-3000:]}")

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "makini_test") -> str:
        return f"postgresql://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def credentials(self) -> str:
        """Connection string of the session's database `makini_test`."""
        return self.dsn()

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database; returns its connection string."""
        import psycopg2

        if name is None:
            self._counter += 1
            name = f"makini_{self._counter}_{uuid.uuid4().hex[:6]}"
        connection = psycopg2.connect(self.dsn("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.dsn(name)


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("MAKINI_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"MAKINI_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session, with an empty database `makini_test`."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _postgres_unavailable(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): "
            "apt-get install -y postgresql"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _postgres_unavailable("psycopg2 is not installed: pip install -e '.[test]'")
    assert bin_dir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            _postgres_unavailable("running as root and there is no `postgres` system user")
    server = PostgresServer(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_credentials(postgres_server: PostgresServer) -> str:
    """Connection string of the session's PostgreSQL database."""
    return postgres_server.credentials


@pytest.fixture
def loader(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> Loader:
    """A pipeline into a fresh DuckDB file, or (param `postgres`) a fresh Postgres database."""
    destination_name = getattr(request, "param", "duckdb")
    if destination_name == "duckdb":
        return Loader(sandbox, tmp_path)
    if destination_name == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return Loader(
            sandbox, tmp_path, dlt.destinations.postgres(credentials=server.create_database())
        )
    raise ValueError(f"unknown test destination {destination_name!r}")


# --- The invariant: after every run, the destination equals what the API lists now ------------


def parse_api_time(value: str | None) -> datetime | None:
    """An API timestamp (or date-only value, midnight UTC) as an aware UTC datetime."""
    if value is None:
        return None
    parsed = pendulum.parse(value if len(value) > 10 else value + "T00:00:00Z")
    assert isinstance(parsed, datetime)
    return parsed.astimezone(timezone.utc)


class DestinationRows(Protocol):
    """Anything that reads a destination table as (connection_id, key) -> row."""

    def rows(self, table: str) -> dict[tuple[str, str], dict[str, Any]]: ...


class SqlDataset:
    """Rows of a dataset read with a DB-API connection factory (DuckDB file, PostgreSQL)."""

    def __init__(self, connect: Any, dataset: str = "makini_data") -> None:
        self._connect = connect
        self.dataset = dataset

    @classmethod
    def duckdb(cls, path: Path | str, dataset: str = "makini_data") -> SqlDataset:
        import duckdb

        return cls(lambda: duckdb.connect(str(path), read_only=True), dataset)

    @classmethod
    def postgres(cls, dsn: str, dataset: str = "makini_data") -> SqlDataset:
        import psycopg2

        return cls(lambda: psycopg2.connect(dsn), dataset)

    def rows(self, table: str) -> dict[tuple[str, str], dict[str, Any]]:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(f"SELECT * FROM {self.dataset}.{table}")
            except Exception:  # noqa: BLE001 - a table that was never created holds no rows
                return {}
            names = [d[0] for d in cursor.description]
            return _rows_by_key(table, names, cursor.fetchall())
        finally:
            connection.close()


def _rows_by_key(
    table: str, names: list[str], values: Any
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by identity: (connection_id, key); for a child table whose items have no key,
    (connection_id, parent key, list_position); for a table of connections, (connection_id,)."""
    result: dict[tuple[Any, ...], dict[str, Any]] = {}
    parent = next((n for n in names if n.endswith("_key") and n != "key"), None)
    for row_values in values:
        row = dict(zip(names, row_values))
        if "key" in row:
            key: tuple[Any, ...] = (row["connection_id"], row["key"])
        elif "list_position" in row:
            key = (row["connection_id"], row[parent], row["list_position"])
        else:  # a table of one row per connection (`connections`)
            key = (row["connection_id"],)
        assert key not in result, f"duplicate row {key} in {table}"
        result[key] = row
    return result


def assert_destination_matches_api(
    destination: DestinationRows,
    sandbox: Sandbox,
    *,
    hard_delete: bool = False,
    entities: Iterable[str] | None = None,
    connections: Iterable[str] | None = None,
    aliases: dict[str, str] | None = None,
    dialect: str | None = None,
) -> None:
    """The invariant every integration test ends with: the destination equals the API now.

    For every entity and connection, compared with the API's current listing (tombstones
    included): no record missing, none extra, none stale (`updated_at`), deleted records
    absent (`hard_delete`) or carrying `deleted_at`; and every PO's lines exactly the lines it
    lists now, each read with the PO's loaded version.

    Args:
        destination: The destination's rows (a `Loader`, or `SqlDataset`).
        sandbox: The sandbox whose API is the truth.
        hard_delete: Whether the run removed deleted records instead of marking them.
        entities: Entities to compare (default: all six).
        connections: Connections to compare (default: every connection of the sandbox).
        aliases: `connection_id` in the destination -> the sandbox connection it holds, for
            connections loaded under another name (every other connection is compared too).
        dialect: How the connections were read (default: the destination's own `dialect`,
            else v1). Unified connections have only the entities of their family; records
            they delete vanish, so the run that finds them sets `deleted_at` to when it did.
    """
    aliases = aliases or {}
    dialect = dialect or getattr(destination, "dialect", "v1")
    names = list(connections if connections is not None else sandbox.tokens) + list(aliases)
    sandbox_name = {name: aliases.get(name, name) for name in names}
    families = {c["name"]: c["profile"]["family"] for c in sandbox.admin_connections()}
    problems: list[str] = []
    for entity in entities if entities is not None else ENTITY_PATHS:
        served = [
            name
            for name in names
            if dialect == "v1" or entity in FAMILY_ENTITIES[families[sandbox_name[name]]]
        ]
        api = {
            (connection, record["key"]): record
            for connection in served
            for record in sandbox.records(entity, sandbox_name[connection])
        }
        rows = {k: r for k, r in destination.rows(entity).items() if k[0] in names}
        problems += _compare(entity, api, rows, hard_delete, exact_deletes=dialect == "v1")
        if entity == "purchase_orders":
            lines = destination.rows("purchase_order_line_items")
            lines = {k: r for k, r in lines.items() if k[0] in names}
            problems += _compare_lines(api, rows, lines, hard_delete, exact_deletes=dialect == "v1")
    assert not problems, "destination differs from the API:\n  " + "\n  ".join(problems[:20])


def _compare(
    entity: str,
    api: dict[tuple[str, str], dict[str, Any]],
    rows: dict[tuple[str, str], dict[str, Any]],
    hard_delete: bool,
    exact_deletes: bool = True,
) -> list[str]:
    problems = []
    expected = {k: r for k, r in api.items() if not (hard_delete and r.get("deletedAt"))}
    if not exact_deletes:
        # a record that vanished before any run read it was never loaded: absent is right
        expected = {k: r for k, r in expected.items() if not r.get("deletedAt") or k in rows}
    missing = sorted(set(expected) - set(rows))
    extra = sorted(set(rows) - set(expected))
    if missing:
        problems.append(f"{entity}: {len(missing)} missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{entity}: {len(extra)} extra, e.g. {extra[:3]}")
    for key in sorted(set(expected) & set(rows)):
        record, row = expected[key], rows[key]
        if not exact_deletes and record.get("deletedAt"):
            # it vanished (unified): the run that found it kept its last version, deleted
            if row["deleted_at"] is None:
                problems.append(f"{entity} {key}: deleted in the API, not in the destination")
            continue
        if row["updated_at"] != parse_api_time(record["updatedAt"]):
            problems.append(
                f"{entity} {key}: stale, updated_at {row['updated_at']} != {record['updatedAt']}"
            )
        elif not _same_delete(row["deleted_at"], record.get("deletedAt"), exact_deletes):
            problems.append(
                f"{entity} {key}: deleted_at {row['deleted_at']} != {record.get('deletedAt')}"
            )
    return problems


def _same_delete(stored: Any, deleted_at: str | None, exact: bool) -> bool:
    """Whether a row's deleted_at says what the API says: the same time (v1 tombstones), or
    set at all (a record that vanished: the run that found it set the time)."""
    if exact or deleted_at is None:
        return bool(stored == parse_api_time(deleted_at))
    return stored is not None


def _compare_lines(
    pos: dict[tuple[str, str], dict[str, Any]],
    po_rows: dict[tuple[str, str], dict[str, Any]],
    lines: dict[tuple[str, str], dict[str, Any]],
    hard_delete: bool,
    exact_deletes: bool = True,
) -> list[str]:
    """Lines per PO exact: keys, deleted_at, decimals, and read with the loaded PO version."""
    want: dict[tuple[str, str], set[str]] = {}
    problems = []
    for (connection, po_key), po in pos.items():
        if po.get("deletedAt") and (hard_delete or (connection, po_key) not in po_rows):
            continue
        keys = want.setdefault((connection, po_key), set())
        for line in po.get("lineItems") or []:
            deleted_at = line.get("deletedAt") or po.get("deletedAt")
            if hard_delete and deleted_at:
                continue
            keys.add(line["key"])
            row = lines.get((connection, line["key"]))
            if row is None:
                continue  # reported below as a missing line of its PO
            if row["purchase_order_key"] != po_key:
                problems.append(
                    f"line {connection}/{line['key']}: under PO {row['purchase_order_key']}"
                )
            exact = exact_deletes or bool(line.get("deletedAt"))
            if not _same_delete(row["deleted_at"], deleted_at, exact):
                problems.append(f"line {connection}/{line['key']}: deleted_at {row['deleted_at']}")
            for field, column in (("quantity", "quantity"), ("price", "price")):
                value = line.get(field)
                if row[column] != (None if value is None else Decimal(str(value))):
                    problems.append(f"line {connection}/{line['key']}: {column} {row[column]}")
    got: dict[tuple[str, str], set[str]] = {}
    for (connection, line_key), row in lines.items():
        got.setdefault((connection, row["purchase_order_key"]), set()).add(line_key)
        po_row = po_rows.get((connection, row["purchase_order_key"]))
        if po_row is None or po_row["updated_at"] != row["purchase_order_updated_at"]:
            problems.append(f"line {connection}/{line_key}: not of the loaded PO version")
    for po in sorted(set(want) | set(got)):
        if want.get(po, set()) != got.get(po, set()):
            missing = sorted(want.get(po, set()) - got.get(po, set()))
            extra = sorted(got.get(po, set()) - want.get(po, set()))
            problems.append(f"lines of PO {po}: missing {missing[:3]}, extra {extra[:3]}")
    return problems


# every table the default entities fill (their own, then their child tables)
ALL_TABLES = tuple(table for entity in default_entities() for table in entity.tables)


def api_counts(sandbox: Sandbox, connection: str) -> dict[str, int]:
    """Rows per table of one connection as the v1 API lists them now (tombstones included):
    records per entity, items per child list."""
    counts = {}
    for entity in default_entities():
        records = sandbox.records(entity.name, connection)
        counts[entity.table] = len(records)
        for child in entity.children:
            counts[child.table] = sum(len(r.get(child.field) or []) for r in records)
    return counts


def duckdb_counts(path: Path, dataset: str = "makini_data") -> dict[tuple[str, str], int]:
    """(table, connection_id) -> rows in a DuckDB file's dataset."""
    import duckdb

    with duckdb.connect(str(path), read_only=True) as con:
        result = {}
        for table in ALL_TABLES:
            for connection, count in con.execute(
                f"SELECT connection_id, COUNT(*) FROM {dataset}.{table} GROUP BY 1"
            ).fetchall():
                result[(table, connection)] = count
        return result
