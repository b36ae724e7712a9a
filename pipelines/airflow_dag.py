"""Airflow DAG for the Makini source: one task group (and one dlt pipeline) per connection.

Copy this file into Airflow's dags folder, install `makini-source` (and `apache-airflow`) on the
scheduler/dag-processor and the workers, and configure (environment variables, or
`<dags folder>/.dlt/config.toml` and `.dlt/secrets.toml`, which dlt's `PipelineTasksGroup`
reads from the dags folder):

- `SOURCES__MAKINI__CONNECTIONS` (secret, JSON `{name: token}`): one task group per name.
- `SOURCES__MAKINI__BASE_URL` and every other `sources.makini` setting, as for the source.
- `MAKINI__DESTINATION` (default `duckdb`): any dlt destination name, credentials the dlt way.
- `MAKINI__DUCKDB_PATH` (default `$AIRFLOW_HOME/makini.duckdb`): the shared DuckDB file (give
  an absolute path: a relative one is taken from the working directory of each process).
- `MAKINI__DATASET_NAME` (default `makini_data`), `MAKINI__SCHEDULE` (default `@daily`),
  `MAKINI__RETRIES` (task retries, default 2).

Every connection runs `makini_source` with that connection only, in its own dlt pipeline
`makini_<connection>`, decomposed into one task per resource, run one after the other
(`decompose="serialize"`). Task groups of different connections don't depend on each other,
so workers run them concurrently, all into one dataset (except with DuckDB, a single-writer
file: then the DAG runs one task at a time). Workers keep no local state: each task restores
its pipeline's state from the destination and wipes its local folder when done.
"""

import os
from datetime import timedelta
from typing import Any

import dlt
import pendulum
from airflow.configuration import AIRFLOW_HOME, conf
from dlt.common.configuration.container import Container
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.known_env import DLT_PROJECT_DIR
from dlt.extract import DltSource
from dlt.helpers.airflow_helper import PipelineTasksGroup

from makini_source import makini_source, raise_on_connection_failures
from makini_source.shared_dataset import (
    check_pipeline_names,
    configured_tokens,
    pipeline_name,
    seed_shared_schema,
)

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef,attr-defined,unused-ignore]

DAG_ID = "makini"
DEFAULT_DATASET = "makini_data"


def _use_dags_folder_config() -> None:
    """Reads dlt config from `<dags folder>/.dlt`, as `PipelineTasksGroup` does for its runs."""
    os.environ[DLT_PROJECT_DIR] = conf.get("core", "dags_folder")
    if PluggableRunContext in Container():
        Container()[PluggableRunContext].reload_providers()


def destination() -> Any:
    """The shared destination from config (`makini.destination`, `makini.duckdb_path`)."""
    name = dlt.config.get("makini.destination", str) or "duckdb"
    if name == "duckdb":
        default_path = os.path.join(AIRFLOW_HOME, "makini.duckdb")
        path = dlt.config.get("makini.duckdb_path", str) or default_path
        return dlt.destinations.duckdb(os.path.abspath(path))
    return name


class MakiniTasksGroup(PipelineTasksGroup):
    """dlt's task group, failing the task when the connection failed.

    The source skips a failing connection (token revoked, retries exhausted) so the others
    still load; here every group has one connection, so its failure must fail the task.
    """

    def _run(  # same parameters as the parent's: Airflow passes a callable's named context only
        self,
        pipeline: dlt.Pipeline,
        data: Any,
        table_name: Any = None,
        write_disposition: Any = None,
        loader_file_format: Any = None,
        schema_contract: Any = None,
        pipeline_name: Any = None,
        on_before_run: Any = None,
        truncate_staging_destination: Any = None,
    ) -> None:
        if not os.path.isdir(os.path.join(pipeline.working_dir, "schemas")):
            # the previous task of this group wiped the pipeline's working folder: that happens
            # when all tasks run in one process (`airflow dags test`); workers parse the DAG
            # anew for every task. Recreate the folder.
            pipeline.drop()
        if isinstance(data, DltSource):
            seed_shared_schema(pipeline, data)
        super()._run(
            pipeline,
            data,
            table_name=table_name,
            write_disposition=write_disposition,
            loader_file_format=loader_file_format,
            schema_contract=schema_contract,
            pipeline_name=pipeline_name,
            on_before_run=on_before_run,
            truncate_staging_destination=truncate_staging_destination,
        )
        if isinstance(data, DltSource):
            raise_on_connection_failures(data)


def build_dag() -> DAG:
    """The DAG: one independent task group per configured connection."""
    _use_dags_folder_config()
    tokens = configured_tokens()
    check_pipeline_names(tokens)
    retries = dlt.config.get("makini.retries", int)
    is_duckdb = (dlt.config.get("makini.destination", str) or "duckdb") == "duckdb"
    dag = DAG(
        dag_id=DAG_ID,
        description="Makini -> dlt, one pipeline per connection",
        schedule=dlt.config.get("makini.schedule", str) or "@daily",
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        # DuckDB is one file with one writer; other destinations take concurrent loads
        max_active_tasks=1 if is_duckdb else 16,
        default_args={
            "owner": "makini",
            # a first load of two connections at once may race on creating the same table
            # or column; a retry finds it there
            "retries": 2 if retries is None else int(retries),
            "retry_delay": timedelta(minutes=1),
            "execution_timeout": timedelta(hours=4),
        },
        tags=["makini", "dlt"],
    )
    with dag:
        for connection in sorted(tokens):
            name = pipeline_name(connection)
            # the group must exist before its pipeline: it gives the pipeline a fresh working dir
            group = MakiniTasksGroup(name, use_data_folder=False, wipe_local_data=True)
            pipeline = dlt.pipeline(
                pipeline_name=name,
                destination=destination(),
                dataset_name=dlt.config.get("makini.dataset_name", str) or DEFAULT_DATASET,
            )
            source = makini_source(connections={connection: tokens[connection]})
            group.add_run(pipeline, source, decompose="serialize", loader_file_format="parquet")
    return dag


dag = build_dag()

__all__: list[str] = ["build_dag", "dag", "pipeline_name"]
