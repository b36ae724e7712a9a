"""Hostile input (issue #14): nothing wedges the pipeline, nothing leaks, nothing is lost in
silence.

Every test runs the source over real HTTP against the sandbox, whose fault rules play a
misbehaving server (README "Faults"), and looks at what landed in a real DuckDB (and, where
marked, a real PostgreSQL). In every test the other connection (`globex`) loads exactly while
`acme` misbehaves. Each test names the numbered case of the issue it reproduces.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dlt
import pytest
from conftest import Loader, PostgresServer, Sandbox, assert_destination_matches_api
from dlt.common.pipeline import LoadInfo
from test_resilience_process import PIPELINE, dlt_pipeline_command, pipeline_env, run_pipeline

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source import connection_failures, makini_source, source_connections
from makini_source.exceptions import (
    ContractViolationError,
    LoadFailed,
    MakiniError,
    TooManyColumnsError,
    WaitTooLongError,
)
from makini_source.pipeline import load
from makini_source.progress import RunProgress

# globex's token has characters a URL encodes: its query-string form must be scrubbed too
TOKENS = {"acme": "mk_live_HOSTILE_acme_3b9d71c2e4", "globex": "mk_live+HOSTILE/globex=a6f02d58"}
VENDORS = "vendors"


def config() -> SandboxConfig:
    return SandboxConfig(
        seed=14,
        connections=[
            ConnectionConfig(
                name="acme",
                token=TOKENS["acme"],
                purchase_orders=4,
                vendors=6,
                materials=2,
                sites=1,
                assets=1,
                work_orders=1,
                lines_per_po=(2, 3),
                custom_fields={"Cost Center": "string", "projectCode": "integer"},
            ),
            ConnectionConfig(
                name="globex",
                token=TOKENS["globex"],
                purchase_orders=3,
                vendors=5,
                materials=2,
                sites=1,
                assets=1,
                work_orders=1,
                custom_fields={"Region": "string"},
            ),
        ],
    )


@pytest.fixture
def sandbox(sandbox_factory: Any) -> Sandbox:
    return sandbox_factory(config())


def set_faults(sandbox: Sandbox, *rules: dict[str, Any]) -> None:
    sandbox.post("/_admin/faults", {"rules": list(rules)})


def fired(sandbox: Sandbox) -> list[int]:
    return [rule["fired"] for rule in sandbox.admin.get("/_admin/faults").json()["data"]]


def requests_of(sandbox: Sandbox, connection: str, entity: str = VENDORS) -> int:
    stats = sandbox.admin.get("/_admin/stats").json()["data"]["connections"]
    return int(stats.get(connection, {}).get("entities", {}).get(entity, 0))


def run(loader: Loader, **kwargs: Any) -> Any:
    """One run of the project's `load()` (the wedge protection lives there); the source."""
    kwargs.setdefault("base_url", loader.sandbox.url)
    kwargs.setdefault("connections", dict(loader.sandbox.tokens))
    kwargs.setdefault("dialect", loader.dialect)
    kwargs.setdefault("entities", [VENDORS])
    kwargs.setdefault("max_slices", 1)  # no probe request: faults hit the listing itself
    if kwargs["dialect"] == "unified":
        kwargs.setdefault("family", "erp")  # no family probe either
    kwargs.setdefault("backoff_base_seconds", 0.01)
    source = makini_source(**kwargs)
    info = load(loader.pipeline, source)
    assert isinstance(info, LoadInfo)
    return source


def failure(source: Any, connection: str = "acme") -> MakiniError:
    failures = connection_failures(source)
    assert set(failures) == {connection}, failures
    return failures[connection]


def notes(source: Any, connection: str = "acme") -> list[str]:
    return next(c.notes for c in source_connections(source) if c.name == connection)


def custom_columns(loader: Loader, connection: str, table: str = VENDORS) -> dict[str, str]:
    """custom field name -> column, as `custom_field_columns` says for one connection."""
    rows = loader.query(
        f"SELECT name, column_name FROM {loader.table('custom_field_columns')} "
        f"WHERE connection_id = '{connection}' AND table_name = '{table}'"
    )
    return dict(rows)  # type: ignore[arg-type]


# --- 2. custom-field names: never two in one column ------------------------------------------

COLLIDING = {
    "cost_center": "B",  # before "Cost Center" on purpose: the order sent does not matter
    "Cost Center": "A",
    "CostCenter": "C",
    "成本中心": "CC-100",
    "项目代码": "P-7",
    "Größe": "L",
    "Grüße": "hi",
    "": "empty",
}


@pytest.mark.parametrize("dialect", ["v1", "unified"])
def test_colliding_custom_field_names_each_keep_their_value_in_a_stable_column(
    loader: Loader, dialect: str
) -> None:
    """Why 2 and 9 (empty name): each name its own column, recorded per connection."""
    loader.dialect = dialect
    sandbox = loader.sandbox
    run(loader)  # "Cost Center" alone first: the column users already query
    assert custom_columns(loader, "acme")["Cost Center"] == "custom_fields__cost_center"
    columns_before = {row[0] for row in loader.query(_columns_sql(loader))}

    reversed_order = dict(reversed(list(COLLIDING.items())))
    set_faults(
        sandbox,
        {"kind": "bad_record", "index": "all", "connection": "acme", "custom_fields": COLLIDING},
        {
            "kind": "bad_record",
            "index": "all",
            "connection": "globex",
            "custom_fields": reversed_order,
        },
    )
    source = run(loader, start_date="2000-01-01", lookback_seconds=10**9)  # read everything
    assert not connection_failures(source)
    acme, globex = custom_columns(loader, "acme"), custom_columns(loader, "globex")
    assert COLLIDING.keys() <= acme.keys()
    # one column per name, the same in both connections whatever order they came in
    assert len({acme[name] for name in COLLIDING}) == len(COLLIDING)
    assert {name: acme[name] for name in COLLIDING} == {name: globex[name] for name in COLLIDING}
    assert acme["Cost Center"] == "custom_fields__cost_center"  # kept its column
    assert acme["Größe"] == "custom_fields__gr_e"  # dlt's own name, not taken before it
    assert re.fullmatch(r"custom_fields__cost_center_[0-9a-f]{8}", acme["cost_center"])
    assert re.fullmatch(r"custom_fields__grusse_[0-9a-f]{8}", acme["Grüße"])
    assert re.fullmatch(r"custom_fields__x_[0-9a-f]{8}", acme["成本中心"])
    assert re.fullmatch(r"custom_fields__empty_[0-9a-f]{8}", acme[""])
    for connection, mapping in (("acme", acme), ("globex", globex)):
        rows = [r for k, r in loader.rows(VENDORS).items() if k[0] == connection]
        assert rows
        for row in rows:
            assert {name: row[mapping[name]] for name in COLLIDING} == COLLIDING, connection
    # a second run changes no column and adds none
    run(loader)
    assert custom_columns(loader, "acme") == acme
    columns_after = {row[0] for row in loader.query(_columns_sql(loader))}
    assert columns_before <= columns_after
    assert columns_after - columns_before == {acme[name] for name in COLLIDING} - columns_before
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


def _columns_sql(loader: Loader) -> str:
    dataset = loader.pipeline.dataset_name
    return (
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = '{dataset}' AND table_name = '{VENDORS}'"
    )


# --- 1. nothing wedges: NUL, refused packages, too many columns ------------------------------


@pytest.mark.postgres
def test_nul_in_text_is_removed_with_a_note_and_the_next_run_is_not_blocked(
    loader: Loader,
) -> None:
    """Why 1: a NUL in a string failed every later run on PostgreSQL."""
    sandbox = loader.sandbox
    secret_like = "s3cr3t-\u0000-value"
    set_faults(
        sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "index": 1,
            "set_field": {"name": "a\u0000b", "code": secret_like},
        },
    )
    for attempt in (1, 2):
        source = run(loader, start_date="2000-01-01", lookback_seconds=10**9)
        assert not connection_failures(source), attempt
        assert not loader.pipeline.has_pending_data
        rows = loader.rows(VENDORS)
        changed = [row for key, row in rows.items() if key[0] == "acme" and row["name"] == "ab"]
        assert len(changed) == 1 and changed[0]["code"] == "s3cr3t--value"
        said = [note for note in notes(source) if "NUL" in note]
        key = changed[0]["key"]
        assert {note.split(",")[0] for note in said} == {
            f"removed NUL characters (U+0000) from vendors.{column}" for column in ("name", "code")
        }
        assert all(repr(key) in note and "s3cr3t" not in note for note in said)
    sandbox.admin.delete("/_admin/faults").raise_for_status()
    run(loader)
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


def _refuse_duplicate_names(loader: Loader) -> None:
    """The destination refuses a value for good: a unique index on vendors' names (a
    constraint of the user's, say), the way a destination refuses what it cannot store."""
    with loader.pipeline.sql_client() as client:
        table = client.make_qualified_table_name(VENDORS)
        client.execute_sql(f"CREATE UNIQUE INDEX vendors_unique_name ON {table} (name)")


def _duplicate_a_name(sandbox: Sandbox, connection: str = "acme") -> tuple[str, str, str]:
    """Gives one vendor another's name (a real change: a new updatedAt); returns its key,
    its own name and the other's."""
    records = sandbox.records(VENDORS, connection)
    first, second = records[0], records[1]
    sandbox.put_record(connection, VENDORS, second["key"], {"name": first["name"]})
    return second["key"], second["name"], first["name"]


@pytest.mark.postgres
def test_a_package_the_destination_refuses_is_aborted_and_the_next_run_reads_it_again(
    loader: Loader,
) -> None:
    """Why 1: a package that fails for good stayed pending and failed every later run."""
    sandbox = loader.sandbox
    run(loader)
    marks = loader.watermarks(VENDORS)
    _refuse_duplicate_names(loader)
    key, own_name, _ = _duplicate_a_name(sandbox)
    with pytest.raises(LoadFailed) as caught:
        run(loader)
    message = str(caught.value)
    assert caught.value.aborted and f"package {caught.value.load_id} " in message
    assert "refused it for good" in message and "run again to read its records again" in message
    assert not loader.pipeline.has_pending_data
    assert loader.watermarks(VENDORS) == marks  # rewound: the refused rows are read again
    # while the destination still refuses them, every run says so (and is not blocked)
    with pytest.raises(LoadFailed, match="refused it for good"):
        run(loader)
    # the cause goes away (the record changes again): the next run loads it, nothing pending
    sandbox.put_record("acme", VENDORS, key, {"name": own_name})
    source = run(loader)
    assert not connection_failures(source)
    assert loader.rows(VENDORS)[("acme", key)]["name"] == own_name
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


@pytest.mark.postgres
def test_a_refused_package_left_pending_by_plain_dlt_does_not_block_the_next_run(
    loader: Loader,
) -> None:
    """Why 1: dlt's own `pipeline.run` keeps a refused package pending; `load` aborts it
    (rewinding the state) and reads its records again in the same run."""
    sandbox = loader.sandbox
    run(loader)
    _refuse_duplicate_names(loader)
    key, own_name, _ = _duplicate_a_name(sandbox)
    source = makini_source(
        base_url=sandbox.url, connections=dict(sandbox.tokens), dialect="v1", entities=[VENDORS]
    )
    with pytest.raises(Exception, match="load"):
        loader.pipeline.run(source, loader_file_format="parquet")
    assert loader.pipeline.has_pending_data  # dlt would retry it first, forever
    sandbox.put_record("acme", VENDORS, key, {"name": own_name})
    source = run(loader)
    assert not connection_failures(source) and not loader.pipeline.has_pending_data
    assert loader.rows(VENDORS)[("acme", key)]["name"] == own_name
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


def test_a_package_refused_again_at_the_next_run_is_aborted_and_its_records_read_again(
    sandbox: Sandbox, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Why 1: dlt takes some refusals for transient (PostgreSQL's of a NUL among them): the
    package stayed pending and failed first thing on every later run. A pending package that
    fails again is aborted, and the run reads its records again."""
    loader = Loader(
        sandbox, tmp_path, dlt.destinations.postgres(credentials=postgres_server.create_database())
    )
    run(loader)
    marks = loader.watermarks(VENDORS)
    with loader.pipeline.sql_client() as client:
        # a refusal PostgreSQL reports as "lock not available": dlt retries it as transient
        client.execute_sql(
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN IF NEW.name = 'poison' "
            "THEN RAISE EXCEPTION 'poison refused' USING ERRCODE = '55P03'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        client.execute_sql(
            f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {client.make_qualified_table_name(VENDORS)} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
    record = sandbox.records(VENDORS, "acme")[0]
    sandbox.put_record("acme", VENDORS, record["key"], {"name": "poison"})
    with pytest.raises(LoadFailed) as caught:
        run(loader)
    assert not caught.value.aborted and "poison refused" in str(caught.value)
    assert "the next run tries it once more first" in str(caught.value)
    assert loader.pipeline.has_pending_data
    # the record is fixed at the source; the pending package still holds "poison"
    sandbox.put_record("acme", VENDORS, record["key"], {"name": record["name"]})
    source = run(loader)  # not blocked: the package is aborted, its records read again
    assert not connection_failures(source) and not loader.pipeline.has_pending_data
    assert loader.rows(VENDORS)[("acme", record["key"])]["name"] == record["name"]
    assert loader.watermarks(VENDORS)["acme"] >= marks["acme"]
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


def test_custom_fields_past_the_column_budget_fail_their_connection_before_the_load(
    loader: Loader,
) -> None:
    """Why 1: ~3,000 columns in one table failed the load of every connection."""
    many = {f"Field {number:03}": number for number in range(80)}
    set_faults(
        loader.sandbox,
        {"kind": "bad_record", "index": "all", "connection": "acme", "custom_fields": many},
    )
    source = run(loader, max_columns_per_table=50)
    error = failure(source)
    assert isinstance(error, TooManyColumnsError)
    text = str(error)
    assert "table vendors would have" in text and "max_columns_per_table=50" in text
    assert "connection=acme" in text and "entity=vendors" in text
    assert not loader.pipeline.has_pending_data
    assert len(loader.query(_columns_sql(loader))) <= 50
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )
    # the default leaves room below PostgreSQL's hard limit of 1,600 columns
    import inspect

    default = inspect.signature(makini_source).parameters["max_columns_per_table"].default
    assert 100 <= default <= 1_000


# --- 4. reserved columns ---------------------------------------------------------------------


def test_record_fields_never_set_the_sources_own_columns(loader: Loader) -> None:
    """Why 4: `connectionId`, `purchaseOrderKey`, `_dlt_id` in records set the source's own
    columns (another tenant's id, a re-parented line)."""
    sandbox = loader.sandbox
    orders = sandbox.records("purchase_orders", "acme")
    other = orders[1]["key"]
    set_faults(
        sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "entity": VENDORS,
            "set_field": {"connectionId": "globex", "_dlt_id": "forged", "_makini_marker": True},
        },
        {
            "kind": "bad_record",
            "connection": "acme",
            "entity": "purchase-orders",
            "target": "lineItems.1",
            "set_field": {"purchaseOrderKey": other, "connectionId": "globex", "_dlt_id": "x"},
        },
    )
    source = run(loader, entities=[VENDORS, "purchase_orders"])
    assert not connection_failures(source)
    vendor = loader.rows(VENDORS)[("acme", sandbox.records(VENDORS, "acme")[0]["key"])]
    assert vendor["connection_id"] == "acme" and vendor["api_connection_id"] == "globex"
    assert vendor["api__dlt_id"] == "forged" and vendor.get("_dlt_id") != "forged"
    assert vendor["api__makini_marker"] is True
    line_key = orders[0]["lineItems"][1]["key"]
    line = loader.rows("purchase_order_line_items")[("acme", line_key)]
    assert line["purchase_order_key"] == orders[0]["key"]  # still under its own order
    assert line["api_purchase_order_key"] == other and line["api_connection_id"] == "globex"
    # every order has exactly its own lines, globex nothing of acme's
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS, "purchase_orders"])


# --- 5. watermark sanity ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["v1", "unified"])
def test_a_sync_point_in_the_future_is_not_stored_and_an_unreadable_one_names_the_connection(
    loader: Loader, dialect: str
) -> None:
    """Why 5: `last_sync_at` 9999-12-31 froze loading for good, in silence."""
    loader.dialect = dialect
    sandbox = loader.sandbox
    run(loader, lookback_seconds=0)
    marks = loader.watermarks(VENDORS)
    sandbox.sync("acme", last_sync_at="9999-12-31")
    source = run(loader, lookback_seconds=0)
    assert any("9999-12-31" in note and "in the future" in note for note in notes(source))
    assert loader.watermarks(VENDORS) == marks  # kept
    # records changed later are still read by the next run
    record = sandbox.records(VENDORS, "acme")[2]
    sandbox.put_record("acme", VENDORS, record["key"], {"name": "Changed after the future"})
    sandbox.sync("acme", last_sync_at="9999-12-31")
    run(loader, lookback_seconds=0)
    assert loader.rows(VENDORS)[("acme", record["key"])]["name"] == "Changed after the future"
    assert loader.watermarks(VENDORS) == marks
    # an unreadable sync time fails its connection, named; the other one loads
    field = "last_sync_at" if dialect == "v1" else "sync_updated_at"
    for raw in ("not-a-time", 1717236900):
        sandbox.post("/_admin/connections/acme/sync", {"sync_time_raw": raw})
        error = failure(run(loader, lookback_seconds=0))
        assert isinstance(error, ContractViolationError) and error.field == field
        assert "connection=acme" in str(error) and "is not a timestamp" in str(error)
    sandbox.post("/_admin/connections/acme/sync", {"clear_sync_time_raw": True})
    sandbox.sync("acme")
    run(loader, lookback_seconds=0)
    assert_destination_matches_api(loader, sandbox, entities=[VENDORS])


# --- 6. bounded requests ---------------------------------------------------------------------


def test_a_trickling_answer_is_cut_off_at_the_request_deadline(loader: Loader) -> None:
    """Why 6: headers then 1 byte/s hung a run past every timeout."""
    set_faults(
        loader.sandbox,
        {"kind": "drip", "connection": "acme", "entity": VENDORS, "bytes_per_second": 50},
    )
    started = time.monotonic()
    source = run(loader, deadline_seconds=0.5, timeout_seconds=5, max_attempts=2)
    assert time.monotonic() - started < 6
    error = failure(source)
    assert "still arriving after deadline_seconds=0.5" in str(error)
    assert "gave up after 2 attempts" in str(error) and "connection=acme" in str(error)
    assert fired(loader.sandbox) == [2]
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


def test_an_endless_answer_is_cut_off_at_the_size_limit(loader: Loader) -> None:
    """Why 6: an endless body took 3.4 GB in 20 s."""
    set_faults(loader.sandbox, {"kind": "endless", "connection": "acme", "entity": VENDORS})
    started = time.monotonic()
    source = run(loader, max_response_bytes=300_000, max_attempts=2, deadline_seconds=60)
    assert time.monotonic() - started < 10
    error = failure(source)
    assert "over max_response_bytes=300,000" in str(error) and "gave up after 2" in str(error)
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


@pytest.mark.parametrize("dialect", ["v1", "unified"])
def test_endless_empty_pages_stop_at_max_empty_pages(loader: Loader, dialect: str) -> None:
    """Why 9: 100,000 empty pages with fresh cursors were followed without end."""
    loader.dialect = dialect
    set_faults(loader.sandbox, {"kind": "empty_pages", "connection": "acme", "entity": VENDORS})
    source = run(loader, max_empty_pages=25, page_size=2)
    if dialect == "unified":
        # the walk never follows `links.next`: pages past the end claim more in vain
        assert not connection_failures(source)
        loader.sandbox.admin.delete("/_admin/faults").raise_for_status()  # for the oracle
        assert_destination_matches_api(loader, loader.sandbox, entities=[VENDORS])
        return
    error = failure(source)
    assert isinstance(error, ContractViolationError) and error.field == "next_cursor"
    assert "25 empty pages in a row" in str(error) and "max_empty_pages=25" in str(error)
    assert requests_of(loader.sandbox, "acme") == 25
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


# --- 7. bounded waits ------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["86400", "{now+86400}", "{now_ms+86400}"])
def test_a_rate_limit_hold_longer_than_max_wait_fails_at_once_naming_the_wait(
    loader: Loader, reset: str
) -> None:
    """Why 7: `X-RateLimit-Remaining: 0` with a reset a day away (seconds, Unix seconds, Unix
    milliseconds) slept a day (or 57,000 years) in silence."""
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    set_faults(
        loader.sandbox,
        {"kind": "headers", "connection": "acme", "entity": VENDORS, "headers": headers},
    )
    started = time.monotonic()
    source = run(loader, page_size=2, max_wait_seconds=300)
    assert time.monotonic() - started < 10
    error = failure(source)
    assert isinstance(error, WaitTooLongError)
    seconds = re.search(r"holds the next request for ([\d,]+)s", str(error))
    assert seconds and 86_390 <= int(seconds.group(1).replace(",", "")) <= 86_401, str(error)
    assert "max_wait_seconds=300" in str(error) and "X-RateLimit-Reset" in str(error)
    assert requests_of(loader.sandbox, "acme") == 1  # the page it announced came, no more
    acme = sum(1 for key in loader.rows(VENDORS) if key[0] == "acme")
    assert acme == 2  # that page's rows still loaded
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


def test_a_hold_within_max_wait_is_waited_and_shown_while_it_lasts(loader: Loader) -> None:
    """Why 7: progress said `throttled=0.0s` while the run slept."""
    set_faults(
        loader.sandbox,
        {
            "kind": "headers",
            "connection": "acme",
            "entity": VENDORS,
            "headers": {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"},
            "times": 1,
        },
    )
    stream = io.StringIO()
    progress = RunProgress(stream=stream, terminal=False, log_every=0.2)
    loader.pipeline.collector = progress
    source = makini_source(
        base_url=loader.sandbox.url,
        connections=dict(loader.sandbox.tokens),
        dialect="v1",
        entities=[VENDORS],
        max_slices=1,
        page_size=2,
    )
    progress.watch(source)
    load(loader.pipeline, source)
    assert not connection_failures(source)
    assert re.search(r"extract .* waiting [23]s", stream.getvalue()), stream.getvalue()
    stats = next(c for c in source_connections(source) if c.name == "acme").client.stats
    assert 2.0 <= stats.throttle_seconds <= 4.0 and stats.backoff_seconds == 0
    assert_destination_matches_api(loader, loader.sandbox, entities=[VENDORS])


@pytest.mark.parametrize("retry_after", ["0", "-5", "{http_date-3600}"])
def test_a_retry_after_of_zero_negative_or_past_backs_off(loader: Loader, retry_after: str) -> None:
    """Why 7: `Retry-After` of 0, negative or a past date gave 8 retries in 0.4 s."""
    set_faults(
        loader.sandbox,
        {
            "kind": "headers",
            "status": 503,
            "connection": "acme",
            "entity": VENDORS,
            "headers": {"Retry-After": retry_after},
            "times": 3,
        },
    )
    started = time.monotonic()
    source = run(loader, backoff_base_seconds=0.4, max_attempts=4)
    assert not connection_failures(source)
    stats = next(c for c in source_connections(source) if c.name == "acme").client.stats
    # backoffs of 0.2-0.4, 0.4-0.8 and 0.8-1.6 s: at least 1.4 s, never the 0.2 s floor alone
    assert stats.retries == 3 and stats.backoff_seconds >= 1.4
    assert time.monotonic() - started >= 1.4
    assert_destination_matches_api(loader, loader.sandbox, entities=[VENDORS])


# --- 8. malformed is not cut off ---------------------------------------------------------------

LONE_SURROGATE = '{"data":[{"key":"V-1","name":"\\ud800"}],"next_cursor":null,"total_count":1}'
INVALID_UTF8 = b'{"data":[{"key":"V-1","name":"\xff\xfe"}],"next_cursor":null,"total_count":1}'


@pytest.mark.parametrize(
    "rule, reason",
    [
        ({"body": LONE_SURROGATE}, "surrogate"),
        ({"body_base64": base64.b64encode(INVALID_UTF8).decode()}, "not valid UTF-8"),
        ({"append": "\n<!-- cached -->"}, "after document"),
    ],
    ids=["lone-surrogate", "invalid-utf8", "trailing-garbage"],
)
def test_a_whole_answer_that_does_not_parse_is_a_contract_error_never_retried(
    loader: Loader, rule: dict[str, Any], reason: str
) -> None:
    """Why 8: a complete but invalid body was retried 8 times (53 s) as "cut off"."""
    set_faults(
        loader.sandbox,
        {"kind": "raw_body", "connection": "acme", "entity": VENDORS, **rule},
    )
    started = time.monotonic()
    error = failure(run(loader, max_attempts=8, backoff_base_seconds=0.5))
    assert time.monotonic() - started < 5
    assert isinstance(error, ContractViolationError) and error.field == "body"
    text = str(error)
    assert "is not valid JSON at byte" in text and reason in text, text
    assert "connection=acme" in text and "entity=vendors" in text and "request_id=req_" in text
    assert fired(loader.sandbox) == [1]  # never retried
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


@pytest.mark.parametrize(
    "dialect, entity, literal, settings",
    [
        ("v1", VENDORS, "NaN", {}),  # read by pyarrow's JSON reader (it takes NaN)
        ("v1", "purchase_orders", "-Infinity", {}),  # a decimal pyarrow is told to read
        ("v1", VENDORS, "Infinity", {"max_slices": 2, "start_date": "2000-01-01"}),  # probe
        ("unified", VENDORS, "NaN", {}),
    ],
    ids=["v1-arrow", "v1-decimal", "v1-probe", "unified"],
)
def test_nan_and_infinity_are_refused_the_same_way_on_every_path(
    loader: Loader, dialect: str, entity: str, literal: str, settings: dict[str, Any]
) -> None:
    """Why 8: `NaN` was retried, loaded as NaN, or raised a bare `JSONDecodeError`,
    depending on the path."""
    loader.dialect = dialect
    field = "rating" if entity == VENDORS else "totalNetValue"
    path = "purchase-orders" if entity == "purchase_orders" else entity
    set_faults(
        loader.sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "entity": path,
            "raw_fields": {field: literal},
        },
    )
    error = failure(run(loader, entities=[entity], **settings))
    assert isinstance(error, ContractViolationError) and error.field == "body"
    assert "NaN and Infinity are not JSON numbers" in str(error)
    assert f'"{field}":{literal}' in str(error) and "request_id=req_" in str(error)
    assert fired(loader.sandbox) == [1]  # never retried
    loader.sandbox.admin.delete("/_admin/faults").raise_for_status()
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[entity], connections=["globex"]
    )
    if settings.get("max_slices") == 2:
        # also when it is the exact path (not the probe) that meets it: a page that must be
        # read exactly anyway (a long integer on it)
        set_faults(
            loader.sandbox,
            {
                "kind": "bad_record",
                "connection": "acme",
                "entity": path,
                "raw_fields": {field: literal, "serial": "123456789012345678901234567890"},
            },
        )
        error = failure(run(loader, entities=[entity]))
        assert "NaN and Infinity are not JSON numbers" in str(error)


# --- 9. the small cases ----------------------------------------------------------------------


def test_an_integer_beyond_int64_lands_with_every_digit(loader: Loader) -> None:
    """Why 9: an integer beyond int64 landed as a float."""
    big = 123456789012345678901234567890
    run(loader)  # the custom field's column is an integer column now
    set_faults(
        loader.sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "index": 0,
            "set_field": {"code": big},
            "custom_fields": {"projectCode": big},
        },
    )
    source = run(loader, lookback_seconds=10**9)
    assert not connection_failures(source)
    key = loader.sandbox.records(VENDORS, "acme")[0]["key"]
    row = loader.rows(VENDORS)[("acme", key)]
    assert row["code"] == str(big)
    # the custom field is an integer column: a value that does not fit goes to its text variant
    assert row["custom_fields__project_code__v_text"] == str(big)
    assert row["custom_fields__project_code"] is None


def test_deleted_at_as_an_object_fails_its_connection_naming_the_field(loader: Loader) -> None:
    """Why 9: `deletedAt` given as an object missed the tombstone in silence."""
    set_faults(
        loader.sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "index": 1,
            "set_field": {"deletedAt": {"at": "2024-01-01T00:00:00Z"}},
        },
    )
    error = failure(run(loader))
    assert isinstance(error, ContractViolationError) and error.field == "deletedAt"
    assert "is not a valid RFC 3339 timestamp" in str(error) and "request_id=req_" in str(error)
    assert not any("deleted_at__" in row[0] for row in loader.query(_columns_sql(loader)))
    assert_destination_matches_api(
        loader, loader.sandbox, entities=[VENDORS], connections=["globex"]
    )


@pytest.mark.parametrize("dialect", ["v1", "unified"])
def test_seven_digit_fractions_load_truncated_to_microseconds(loader: Loader, dialect: str) -> None:
    """Why 9: `.1234567Z` (valid RFC 3339, common from .NET) stopped the run."""
    loader.dialect = dialect
    set_faults(
        loader.sandbox,
        {
            "kind": "bad_record",
            "connection": "acme",
            "index": 0,
            "set_field": {
                "createdAt": "2024-02-29T23:59:59.9999999Z",
                "deletedAt": "2024-06-01T10:15:00.123456789+02:00",
            },
        },
    )
    source = run(loader)
    assert not connection_failures(source)
    key = loader.sandbox.records(VENDORS, "acme")[0]["key"]
    row = loader.rows(VENDORS)[("acme", key)]
    # truncated, never rounded: still 29 February, still the same second
    assert row["created_at"].isoformat() == "2024-02-29T23:59:59.999999+00:00"
    assert row["deleted_at"].isoformat() == "2024-06-01T08:15:00.123456+00:00"


def test_terminal_escapes_from_the_server_are_never_printed_raw(loader: Loader) -> None:
    """Why 9: server text with terminal escape sequences was printed raw."""
    set_faults(
        loader.sandbox,
        {
            "kind": "headers",
            "status": 400,
            "connection": "acme",
            "entity": VENDORS,
            "headers": {"X-Request-Id": "req-\u009b2J-\u009d0;owned\u009c"},
        },
        {
            "kind": "bad_record",
            "connection": "globex",
            "entity": VENDORS,
            "set_field": {"updatedAt": "\u001b[2J\u001b]0;owned\u0007"},
        },
    )
    source = run(loader)
    failures = connection_failures(source)
    assert set(failures) == {"acme", "globex"}
    for error in failures.values():
        text = str(error)
        assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", text), repr(text)
    assert "req-\\x9b2J-\\x9d0;owned\\x9c" in str(failures["acme"])
    assert "\\x1b[2J" in str(failures["globex"])


# --- 3. secrets, whatever the server sends back ----------------------------------------------


def _scan_for_tokens(outputs: list[str], root: Path) -> None:
    """No token, its `Bearer` form or its URL-encoded form in any output or file."""
    files = [path for path in root.rglob("*") if path.is_file()]
    assert files
    for token in TOKENS.values():
        forms = {token, f"Bearer {token}", quote(token, safe=""), quote_plus(f"Bearer {token}")}
        for form in forms:
            for text in outputs:
                assert form not in text, form
            for path in files:
                assert form.encode() not in path.read_bytes(), (form, path)


def _trace(workdir: Path, env: dict[str, str]) -> str:
    return dlt_pipeline_command(workdir / "pipelines", PIPELINE, "trace", env=env)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("SOURCES__MAKINI__CONNECTIONS", json.dumps({"acme": TOKENS["acme"] + "\n"})),
        ("SOURCES__MAKINI__CONNECTIONS", json.dumps({"acme": " " + TOKENS["acme"]})),
        ("SOURCES__MAKINI__CONNECTIONS", json.dumps({"acme": TOKENS["acme"] + "\r\n"})),
        ("SOURCES__MAKINI__API_TOKEN", TOKENS["acme"] + "\t"),
    ],
    ids=["newline", "leading-space", "crlf", "api-token-tab"],
)
def test_a_token_with_surrounding_whitespace_is_a_configuration_error_that_never_shows_it(
    sandbox: Sandbox, tmp_path: Path, setting: str, value: str
) -> None:
    """Why 3: a token read from a file with its newline was printed 9 times (httpx's
    `Illegal header value`) and retried as if transient."""
    env = pipeline_env(sandbox)
    env.pop("SOURCES__MAKINI__CONNECTIONS")
    env[setting] = value
    done = run_pipeline(tmp_path, env, "--entities", VENDORS, "--debug")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: the token of connection" in done.stderr
    assert "surrounding whitespace or control characters" in done.stderr
    stats = sandbox.admin.get("/_admin/stats").json()["data"]
    assert stats["total"]["requests"] == 0  # nothing was sent, nothing retried
    (tmp_path / "marker").write_text("scanned")
    _scan_for_tokens([done.stdout, done.stderr], tmp_path)


def test_a_server_quoting_the_token_never_gets_it_printed_logged_or_stored(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Why 3: a server that quotes the `Authorization` it got (in an error message,
    `X-Request-Id`, a cursor) got the token onto stderr, and for fatal errors into
    `trace.pickle` and `dlt pipeline trace`."""
    set_faults(
        sandbox,
        # an error message and request id quoting it (500: retried, then the connection fails)
        {
            "kind": "echo_auth",
            "connection": "acme",
            "entity": VENDORS,
            "where": ["message", "request_id"],
        },
        # a page whose request id and cursor are the token (the next request sends it back)
        {"kind": "echo_auth", "connection": "globex", "where": ["request_id", "cursor"]},
    )
    env = pipeline_env(
        sandbox,
        SOURCES__MAKINI__MAX_ATTEMPTS="2",
        SOURCES__MAKINI__BACKOFF_BASE_SECONDS="0.01",
        SOURCES__MAKINI__PAGE_SIZE="2",
        SOURCES__MAKINI__MAX_SLICES="1",
        RUNTIME__LOG_LEVEL="DEBUG",
    )
    first = run_pipeline(tmp_path, env, "--entities", f"{VENDORS},sites", "--debug")
    assert first.returncode == 2, first.stdout + first.stderr
    assert "Bearer ***" in first.stderr  # the quotes were there, redacted
    # a fatal error: a 403 quoting the token stops the run (on_permission_denied = fail)
    set_faults(
        sandbox,
        {
            "kind": "echo_auth",
            "connection": "acme",
            "entity": "sites",
            "status": 403,
            "where": ["message", "request_id"],
        },
    )
    env["SOURCES__MAKINI__ON_PERMISSION_DENIED"] = "fail"
    second = run_pipeline(tmp_path, env, "--entities", "sites", "--debug")
    assert second.returncode == 1, second.stdout + second.stderr
    trace = _trace(tmp_path, env)
    assert "permission denied" in trace and "Bearer ***" in trace  # the trace holds the error
    assert any(path.name == "trace.pickle" for path in tmp_path.rglob("*"))
    _scan_for_tokens([first.stdout, first.stderr, second.stdout, second.stderr, trace], tmp_path)


def test_debug_logs_never_show_a_token_a_server_put_in_a_cursor(
    loader: Loader, caplog: pytest.LogCaptureFixture
) -> None:
    """Why 3: httpx logs every request line, cursor included; a server can make the cursor
    the token."""
    set_faults(
        loader.sandbox,
        {"kind": "echo_auth", "connection": "globex", "where": ["cursor", "request_id"]},
    )
    with ExitStack() as stack:
        # every logger that could show it at its most verbose (other tests may have set levels)
        for name in (None, "httpx", "httpcore.http11", "httpcore.connection", "makini_source"):
            stack.enter_context(caplog.at_level(logging.DEBUG, logger=name))
        source = run(loader, page_size=2)
    assert "globex" in connection_failures(source)
    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    assert "cursor=Bearer+***" in logged  # httpx's request line, scrubbed
    assert "(b'x-request-id', b'Bearer ***')" in logged  # httpcore's response headers
    workdir = Path(loader.pipeline.pipelines_dir).parent  # pipelines, packages, DuckDB file
    _scan_for_tokens([logged, str(connection_failures(source))], workdir)
