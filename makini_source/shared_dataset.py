"""One pipeline process per Makini connection, all loading one shared dataset.

A company with hundreds of connections runs one process per connection (its own pipeline name,
state and schema), all into the same dataset. Three things make that safe:

1. Each process merges through its own staging dataset (`staging_layout`): dlt's merge stages
   rows in `<dataset>_staging`, which every load truncates first; shared by concurrent
   processes, one process truncates rows another has staged but not merged yet, and they are
   silently lost.
2. Before extracting, each process learns the column types the shared tables already have
   (`align_with_destination`). A custom field that is text in one connection and a number in
   another keeps the type it was created with, and the other values land in a variant column,
   as in a single pipeline; without this, a process whose own schema never saw the other type
   sends values the column cannot take.
3. A load that fails because another process changed the same tables at the same moment
   (concurrent CREATE/ALTER TABLE, or a column created with another type between our check and
   our load) is retried (`run_connection`): first the same package; if it still fails, the
   package is dropped, the state and schema are restored from the destination (only completed
   loads count there) and the connection is extracted again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.common.schema.utils import new_column, new_table
from dlt.extract import DltSource
from dlt.pipeline.exceptions import PipelineStepFailed

from makini_source.catalogue import load_catalogue
from makini_source.pipeline import check_load_info, finish_pending

logger = logging.getLogger("makini_source")

# column properties taken over from the destination; the rest stay the source's own hints
_REFLECTED = ("data_type", "precision", "scale", "timezone", "nullable")


def staging_layout(connection: str) -> str:
    """A staging dataset layout of one connection's process, e.g. `%s_staging_acme`.

    Pass it to the destination (`staging_dataset_name_layout=...`) or set
    `DESTINATION__<NAME>__STAGING_DATASET_NAME_LAYOUT` in that process's environment.
    """
    return "%s_staging_" + re.sub(r"[^0-9a-zA-Z_]", "_", connection).lower()


def align_with_destination(pipeline: dlt.Pipeline, source: DltSource) -> dict[str, list[str]]:
    """Adds to `source.schema` the columns the destination's tables have and this pipeline's
    schema does not know yet, with their destination types; a column the schema knows with
    another type than the destination's takes the destination's.

    Returns:
        table -> the columns added or retyped.
    """
    schema_name = source.schema.name
    known = pipeline.schemas[schema_name] if schema_name in pipeline.schema_names else source.schema
    tables = [table for entity in load_catalogue().values() for table in entity.tables]
    added: dict[str, list[str]] = {}
    client_schema = schema_name if schema_name in pipeline.schema_names else None
    with pipeline.destination_client(client_schema) as client:  # type: ignore[arg-type]
        if not hasattr(client, "get_storage_tables") or not client.is_storage_initialized():
            return added  # not a SQL destination, or nothing loaded yet
        storage = list(client.get_storage_tables(tables))  # type: ignore[attr-defined]
    for table, columns in storage:
        if not columns:
            continue
        existing = known.tables.get(table, {}).get("columns", {})
        new_columns = []
        for name, column in columns.items():
            if name.startswith("_dlt"):
                continue
            hints: dict[str, Any] = {k: column[k] for k in _REFLECTED if k in column}  # type: ignore[literal-required]
            if name in existing:
                ours = existing[name]
                if ours.get("data_type") and hints.get("data_type") not in (
                    None,
                    ours["data_type"],
                ):
                    # another process created the column with another type first: the
                    # destination wins, our values of the other type go to a variant column
                    ours.update(hints)  # type: ignore[typeddict-item]
                    added.setdefault(table, []).append(name)
                continue
            new_columns.append({**new_column(name), **hints})
        if new_columns:
            source.schema.update_table(
                new_table(table, write_disposition="merge", columns=new_columns)  # type: ignore[arg-type]
            )
            added.setdefault(table, []).extend(c["name"] for c in new_columns)
    if added:
        logger.info("columns taken over from the destination: %s", added)
    return added


def run_connection(
    make_pipeline: Callable[[], dlt.Pipeline],
    make_source: Callable[[], DltSource],
    attempts: int = 3,
    **run_kwargs: Any,
) -> LoadInfo:
    """Runs one connection's pipeline into a dataset that other processes load at the same time.

    Args:
        make_pipeline: Returns this connection's pipeline (its own name; a destination whose
            `staging_dataset_name_layout` is `staging_layout(connection)`).
        make_source: Returns a fresh `makini_source(...)` of this one connection.
        attempts: Runs before giving up on concurrent-change failures.
        run_kwargs: Passed to `pipeline.run` (default `loader_file_format="parquet"`).
    """
    run_kwargs.setdefault("loader_file_format", "parquet")
    pipeline = make_pipeline()
    finish_pending(pipeline)  # an interrupted run's packages first (a refused one is aborted)
    last_error: PipelineStepFailed | None = None
    for attempt in range(1, attempts + 1):
        source = make_source()
        align_with_destination(pipeline, source)
        try:
            info = pipeline.run(source, **run_kwargs)
            check_load_info(pipeline, info)
            return info
        except PipelineStepFailed as exc:
            if exc.step not in ("sync", "load"):
                raise
            last_error = exc
            if exc.step == "sync":  # nothing extracted yet: just try again
                continue
            logger.warning(
                "load attempt %d failed, probably a concurrent schema change: %s", attempt, exc
            )
        try:  # a concurrent CREATE/ALTER TABLE: the tables are there now
            info = pipeline.load()
            check_load_info(pipeline, info)
            return info
        except PipelineStepFailed as exc:
            last_error = exc
        # the package was typed against a schema another process contradicted: start over from
        # what the destination holds (state of completed loads only, the newest schema)
        with pipeline.sql_client() as client, client.with_staging_dataset():
            if client.has_dataset():  # this process's own staging tables, typed the old way
                client.drop_dataset()
        pipeline.drop()
        pipeline = make_pipeline()
        pipeline.sync_destination()
    assert last_error is not None
    raise last_error
