"""The Makini pipeline, built and run the same way by every entry point.

The command line, the Airflow and Dagster modules and the benchmark build their destination and
pipeline here, so what changes load safety is set in code rather than in a `.dlt/config.toml`
that dlt reads from the working directory only:

- DuckDB runs with a 96MB memory limit and two load jobs at a time: dlt loads all seven tables
  at once and DuckDB's own limit is 80% of RAM, so a first sync of 100,000 POs peaked at
  700-900 MB resident in the load step; with these settings it stays under 400 MB (measured
  366-381 MB at 100,000 and 200,000 POs) for about a second more of load time. DuckDB's
  worker threads leave each load job's own thread a core (`duckdb_threads`: one on two cores).
- `load` keeps a DuckDB file open for the whole run and checkpoints it every 16MB of log,
  DuckDB's own default (dlt's 1gb assumes the file is closed after every job).
- `load` keeps Python's full garbage collections off the objects alive before the run
  (`heap_frozen`), which they would otherwise walk again and again, and resolves the
  destination's partial configuration once rather than each time dlt asks for the
  destination's capabilities (`capabilities_config_reused`).
- The DuckDB file defaults to `<pipeline_name>.duckdb` in the working directory, dlt's own
  default, so `dlt pipeline <name> drop/sync/info` run from the same directory find it.
- `load` and `run` finish the packages an interrupted run left before extracting, and fail
  when a load package was aborted or kept failed jobs, naming the package and what to do.
- A package the destination refuses for good never blocks later runs: it is aborted, which
  rewinds the incremental state to before it, so its records are read again (and load once the
  cause is gone). "For good" is a terminal error (a value or a schema the destination cannot
  take: aborted at once), or a job that failed through all of dlt's retries in one run and
  fails again when the next run tries the pending package once more (dlt classifies some
  refusals, PostgreSQL's of a NUL character among them, as transient). dlt alone would keep the
  package pending and retry it first on every run, forever, reading nothing new. A package that
  cannot load because the destination is unreachable stays pending.

The table shape itself (`_dlt_load_id` on every row) is the source's own doing (`load_id.py`):
`pipeline.run(makini_source())` in your code makes the same tables.

Usage::

    import dlt
    from makini_source import makini_source
    from makini_source.pipeline import run

    pipeline = dlt.pipeline("makini", destination="duckdb", dataset_name="makini_data")
    run(pipeline, makini_source())  # raises if a connection failed or a package did not load
"""

from __future__ import annotations

import difflib
import gc
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import dlt
from dlt.common.destination.exceptions import (
    DestinationTerminalException,
    UnknownDestinationModule,
)
from dlt.common.destination.reference import Destination
from dlt.common.pipeline import LoadInfo, get_dlt_pipelines_dir
from dlt.common.runtime.collector import NULL_COLLECTOR, Collector
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.load.exceptions import LoadClientJobException, LoadClientJobFailed
from dlt.pipeline.exceptions import PipelineStepFailed

from makini_source.exceptions import ConfigurationError, LoadFailed
from makini_source.redact import server_text

DEFAULT_PIPELINE_NAME = "makini"
DEFAULT_DATASET_NAME = "makini_data"
LOADER_FILE_FORMAT = "parquet"
DUCKDB_MEMORY_LIMIT = "96MB"
DUCKDB_LOAD_JOBS = 2
# DuckDB's own default. dlt raises it to 1gb for its loads, counting on the checkpoint it gets
# when it closes the file after each job; `load()` keeps the file open for the whole run, so
# with 1gb every loaded row waited uncheckpointed in the 96MB buffer pool (the merges of a
# 100,000-PO first sync ran out of memory at times and were retried) and the whole file was
# checkpointed at the end, ~1.4 s after the load step. Measured on that first sync's load
# alone, side by side (4 rounds): 8.63 s median with 1gb, 6.77 s with 16MB.
DUCKDB_CHECKPOINT_THRESHOLD = "16MB"


def duckdb_threads(cores: int | None = None) -> int:
    """DuckDB's `threads` for a load: the cores the load jobs' own threads leave free.

    `threads` is the size of one database's worker pool, shared by every query on it, and
    each query also runs on the thread that issued it. With DuckDB's default (one per core),
    two load jobs on two cores ran three busy threads and a merge ran out of the 96MB now
    and then. With the jobs' threads counted, a 100,000-PO first sync's load step alone,
    replayed from one package 9 times each way, took 5.36 s (1 thread) against 6.21 s
    (DuckDB's default, one run out of memory) median, and 6 MB less memory.

    Args:
        cores: The cores this process may use (default: the ones it is allowed to run on).
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    return max(1, cores - DUCKDB_LOAD_JOBS + 1)


logger = logging.getLogger("makini_source")
_T = TypeVar("_T")


def duckdb_path(pipeline_name: str, path: str | Path | None = None) -> Path:
    """The DuckDB file of a pipeline: `path`, or dlt's default `<pipeline_name>.duckdb` in the
    working directory, made absolute (a relative path would follow later working directories)."""
    return Path(path or f"{pipeline_name}.duckdb").resolve()


def make_destination(
    name: str = "duckdb",
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    duckdb_file: str | Path | None = None,
    duckdb_memory_limit: str | None = DUCKDB_MEMORY_LIMIT,
    staging_layout: str | None = None,
) -> Destination:  # type: ignore[type-arg]
    """A dlt destination by name; DuckDB with the project's memory limit and load jobs.

    Args:
        name: Any dlt destination (`duckdb`, `postgres`, `snowflake`, `bigquery`, ...) or a
            named destination configured with `destination.<name>.destination_type`.
            Credentials are read the dlt way (`DESTINATION__POSTGRES__CREDENTIALS=...`).
        pipeline_name: Names the default DuckDB file.
        duckdb_file: The DuckDB file (default `<pipeline_name>.duckdb` in the working directory).
        duckdb_memory_limit: DuckDB's `memory_limit`; None leaves DuckDB's default (80% of RAM).
        staging_layout: The staging dataset layout, e.g. `shared_dataset.staging_layout(name)`
            for a process that shares the dataset with others.

    Raises:
        ConfigurationError: `name` is neither a dlt destination nor a configured one.
    """
    options: dict[str, Any] = {}
    if staging_layout:
        options["staging_dataset_name_layout"] = staging_layout
    if name == "duckdb":
        credentials = DuckDbCredentials(
            str(duckdb_path(pipeline_name, duckdb_file)),
            global_config={"memory_limit": duckdb_memory_limit} if duckdb_memory_limit else None,
            # a statement, because dlt's own global config (checkpoint_threshold 1gb) is
            # applied after `global_config` and would override it there
            statements=[
                f"SET GLOBAL checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'",
                f"SET GLOBAL threads = {duckdb_threads()}",
            ],
        )
        return dlt.destinations.duckdb(
            credentials, max_parallel_load_jobs=DUCKDB_LOAD_JOBS, **options
        )
    try:
        destination = Destination.from_reference(name, **options)
    except UnknownDestinationModule:
        destination = None
    if destination is None:
        known = [d for d in dlt.destinations.__all__ if d != "destination"]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigurationError(
            f"destination {name!r} is not a dlt destination; {hint}expected one of "
            f"{', '.join(sorted(known))}, or a named destination configured with "
            f"destination.{name}.destination_type"
        )
    return destination


def make_pipeline(
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    destination: Any = None,
    dataset_name: str = DEFAULT_DATASET_NAME,
    pipelines_dir: str | None = None,
    progress: Collector | None = None,
) -> dlt.Pipeline:
    """A dlt pipeline; `destination` defaults to `make_destination()` (DuckDB)."""
    return dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=destination or make_destination(pipeline_name=pipeline_name),
        dataset_name=dataset_name,
        pipelines_dir=pipelines_dir,  # type: ignore[arg-type]  # None: dlt's default
        progress=progress or NULL_COLLECTOR,
    )


def load(pipeline: dlt.Pipeline, source: Any, **run_kwargs: Any) -> LoadInfo:
    """Runs `source` through `pipeline` (parquet files), after finishing the load packages an
    interrupted run left (`pipeline.run` would load only those and skip the source).

    Returns:
        The load info of this run's package.

    Raises:
        LoadFailed: A package was aborted, kept failed jobs or could not be loaded.
        PipelineStepFailed: Extracting or normalizing failed (the cause in `.exception`).
    """
    run_kwargs.setdefault("loader_file_format", LOADER_FILE_FORMAT)
    with heap_frozen(), capabilities_config_reused(pipeline), duckdb_kept_open(pipeline):
        finish_pending(pipeline)
        info = _load_step(pipeline, lambda: pipeline.run(source, **run_kwargs))
    check_load_info(pipeline, info)
    return info


@contextmanager
def heap_frozen() -> Iterator[None]:
    """Keeps Python's garbage collector off the objects that were alive before the block.

    A run creates enough objects to set off full collections, and each full collection walks
    every tracked object in the process, most of them dlt's, pyarrow's and this package's
    modules, loaded before the run and alive after it: one took 0.09 s of a 1 s incremental
    run at 100,000 POs. Frozen (`gc.freeze`), they are skipped until the block ends, when
    they go back to the oldest generation (`gc.unfreeze`); what the run creates is collected
    as usual. A process that froze objects itself (a forking server) is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def capabilities_config_reused(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Resolves the destination's partial configuration once for the block, not each time
    dlt asks for the destination's capabilities.

    dlt asks ~12 times per run (`Destination.capabilities()`, which resolves the partial
    configuration anew: every field of the destination's and its credentials' specs looked up
    in every provider and config section, ~8 ms each), the same answer every time. A partial
    resolution is only ever asked for there, from the destination's `config_params`; within
    the block it is reused while those are the same objects (dlt replaces the credentials
    when `run` is given some). The full resolution a client gets is dlt's own every time.
    """
    destination = pipeline.destination
    if destination is None:
        yield
        return
    resolve = destination.configuration
    reused: dict[str, Any] = {}  # "params": the config_params resolved, "config": the result

    def configuration(initial_config: Any, accept_partial: bool = False) -> Any:
        if not accept_partial:
            return resolve(initial_config, accept_partial)
        params = list(destination.config_params.items())
        if "config" in reused and _same_objects(reused["params"], params):
            return reused["config"]
        reused.update(params=params, config=resolve(initial_config, accept_partial))
        return reused["config"]

    destination.configuration = configuration  # type: ignore[method-assign]
    try:
        yield
    finally:
        del destination.configuration


def _same_objects(old: list[tuple[str, Any]], new: list[tuple[str, Any]]) -> bool:
    return len(old) == len(new) and all(
        a_key == b_key and a_value is b_value
        for (a_key, a_value), (b_key, b_value) in zip(old, new)
    )


@contextmanager
def duckdb_kept_open(pipeline: dlt.Pipeline) -> Iterator[None]:
    """Keeps a DuckDB destination's database open for the block (other destinations: no-op).

    dlt closes DuckDB whenever no load job holds a connection, so each job of a load reopens
    the file and each close checkpoints it: a fixed cost per table, paid again for every
    child and report table. One connection held here keeps the database instance alive
    and dlt's connections join it (same process, same file, same settings); it is closed,
    and the database checkpointed once, when the block ends. Other processes cannot open
    the file meanwhile, as during any DuckDB load.
    """
    held = _open_duckdb(pipeline)
    try:
        yield
    finally:
        if held is not None:
            held.close()


def _open_duckdb(pipeline: dlt.Pipeline) -> Any:
    """A connection to the pipeline's DuckDB file, or None (another destination, a
    connection the user passed in, or one DuckDB would not open beside dlt's)."""
    destination = pipeline.destination
    if destination is None or destination.destination_name != "duckdb":
        return None
    import duckdb

    try:
        credentials = _duckdb_credentials(pipeline)
        if not isinstance(credentials, DuckDbCredentials) or credentials.external_conn():
            return None
        return duckdb.connect(credentials._conn_str(), read_only=bool(credentials.read_only))
    except Exception as exc:  # noqa: BLE001 - only a speed-up: dlt opens the file itself
        logger.debug("DuckDB not kept open during the run: %s", exc)
        return None


def _duckdb_credentials(pipeline: dlt.Pipeline) -> Any:
    """The DuckDB credentials the pipeline's loads will use."""
    given = pipeline.destination.config_params.get("credentials")  # type: ignore[union-attr]
    if isinstance(given, DuckDbCredentials) and Path(str(given.database)).is_absolute():
        # as `make_destination` builds them: nothing for dlt to resolve (a client costs ~40 ms)
        return given
    with pipeline.destination_client() as client:
        return client.config.credentials


def finish_pending(pipeline: dlt.Pipeline) -> None:
    """Loads the packages an earlier run left pending. One the destination refuses again is
    aborted (the state rewinds, so the coming extraction reads its records again), with a
    warning: it never blocks the run.

    Raises:
        LoadFailed: The pending packages could not be loaded for another reason (the
            destination is unreachable): loading anything else could not work either.
    """
    if not pipeline.has_pending_data:
        return
    try:
        check_load_info(pipeline, _load_step(pipeline, pipeline.run, retried=True))
    except LoadFailed as exc:
        if not exc.aborted:
            raise
        logger.warning("%s Reading them again now.", exc)


def run(pipeline: dlt.Pipeline, source: Any, **run_kwargs: Any) -> LoadInfo:
    """`load`, then raises `ConnectionsFailed` if a connection failed (the others are loaded).

    The one call a script needs to exit non-zero whenever something was not loaded.
    """
    from makini_source import raise_on_connection_failures  # the package imports this module

    info = load(pipeline, source, **run_kwargs)
    raise_on_connection_failures(source)
    return info


def check_load_info(pipeline: dlt.Pipeline, info: LoadInfo | None) -> None:
    """Raises `LoadFailed` if a package of `info` was aborted or has failed jobs."""
    for package in info.load_packages if info else ():
        failed = package.jobs.get("failed_jobs", [])
        name = pipeline.pipeline_name
        if package.state == "aborted":
            # dlt restored the state of before the package: the next run reads its records again
            cause = f": {_job_failure(failed[0])}" if failed else ""
            message = (
                f"load package {package.load_id} of pipeline {name!r} was aborted{cause}. Its "
                "rows were not loaded; the incremental state is that of before it, so fix the "
                "cause and run again to read them again."
            )
        elif failed:
            # the package completed (load.raise_on_failed_jobs = false): the state moved on
            tables = sorted({job.job_file_info.table_name for job in failed})
            resources = sorted(
                {pipeline.default_schema.tables.get(t, {}).get("resource") or t for t in tables}
            )
            message = (
                f"load package {package.load_id} of pipeline {name!r} has {len(failed)} failed "
                f"job(s) ({_job_failure(failed[0])}): their rows were not loaded, and the "
                "incremental state moved on. Fix the cause, then reload with "
                f"`{_dlt_command(pipeline)} drop {' '.join(resources)}` and run again."
            )
        else:
            continue
        raise LoadFailed(
            message,
            pipeline_name=name,
            load_id=package.load_id,
            aborted=package.state == "aborted",
        )


def _job_failure(job: Any) -> str:
    return f"table {job.job_file_info.table_name}: {_last_line(job.failed_message)}"


def _dlt_command(pipeline: dlt.Pipeline) -> str:
    """`dlt pipeline <name>` as the user types it for this pipeline."""
    if Path(pipeline.pipelines_dir) == Path(get_dlt_pipelines_dir()):
        return f"dlt pipeline {pipeline.pipeline_name}"
    return f"dlt pipeline --pipelines-dir {pipeline.pipelines_dir} {pipeline.pipeline_name}"


def _load_step(pipeline: dlt.Pipeline, step: Callable[[], _T], retried: bool = False) -> _T:
    """Runs a step that loads; a load failure becomes `LoadFailed`.

    A package the destination refuses for good is aborted first: a terminal error, or a job
    that fails again when the package is `retried` (left pending by an earlier run). See the
    module's docstring.
    """
    try:
        return step()
    except PipelineStepFailed as exc:
        if exc.step != "load":
            raise
        name = pipeline.pipeline_name
        refused = isinstance(exc.exception, DestinationTerminalException) or (
            retried and isinstance(exc.exception, LoadClientJobException)
        )
        if refused and not isinstance(exc.exception, LoadClientJobFailed):  # dlt did not abort
            try:
                pipeline.abort_packages()  # rewinds the state to before the package
            except Exception as abort_error:  # noqa: BLE001 - then it stays pending
                logger.warning("could not abort package %s: %s", exc.load_id, abort_error)
        aborted = refused and not pipeline.has_pending_data
        if aborted:
            advice = (
                "The destination refused it for good, so it was aborted and the incremental "
                "state rewound to before it: run again to read its records again (if the "
                "destination refuses them again, fix the cause above first)."
            )
        elif isinstance(exc.exception, LoadClientJobException):
            advice = (
                "The package stays pending: the next run tries it once more first, and if it "
                "fails again, aborts it (the incremental state rewinds) and reads its records "
                "again. To discard it now: "
                f"`{_dlt_command(pipeline)} abort-packages`."
            )
        else:
            advice = (
                "The package stays pending: fix the cause (is the destination reachable?) and "
                "run again: it is loaded first."
            )
        raise LoadFailed(
            f"loading package {exc.load_id} of pipeline {name!r} failed: "
            f"{_innermost(exc.exception)}. {advice}",
            pipeline_name=name,
            load_id=exc.load_id,
            aborted=aborted,
        ) from exc


def _innermost(exc: BaseException) -> str:
    """What went wrong, in one line: the failed job's table and the database's own message."""
    job_id, message = getattr(exc, "job_id", None), getattr(exc, "failed_message", None)
    if job_id and message:
        return f"table {str(job_id).split('.', 1)[0]}: {_last_line(message)}"
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    text = str(exc).strip()
    return _last_line(text.split("\n", 1)[0] if text else repr(exc))


def _last_line(text: str | None, limit: int = 300) -> str:
    """The last `SomeError: message` line of a traceback (a database's message may go on with
    lines of context), without the exception's module path; else the last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    line = _RAISED.sub("", raised[-1] if raised else lines[-1]) if lines else "no message"
    return server_text(line, limit)  # a database may quote the row: scrubbed, no escapes


_RAISED = re.compile(r"^[\w.]+\.?(\w*(Error|Exception)): ")
