"""Airflow: a DAG with one task per Makini connection, each loading the shared dataset.

In a file in Airflow's dags folder (as `pipelines/airflow_dag.py` does)::

    from makini_source.orchestration.airflow_dag import build_dag

    dag = build_dag()

Install `makini-source[airflow]` on the scheduler, the dag processor and the workers, and give
them the settings of `makini_source.orchestration` (environment variables, or `.dlt/` in their
working directory, or dlt's Airflow Variable `dlt_secrets_toml`), plus, for this DAG,
`MAKINI__SCHEDULE` (default `@daily`) and `MAKINI__RETRIES` (task retries, default 2).

Tasks `makini_<connection>` do not depend on each other: the executor runs them at once, each
connection in its own pipeline and staging dataset (up to 16 at a time; one at a time on
DuckDB, a file with a single writer). A connection whose token is revoked or whose retries run
out fails its own task. Building the DAG changes nothing in the process's environment: dlt's
`PipelineTasksGroup` sets `DLT_DATA_DIR`, `DLT_PROJECT_DIR` and `DLT_LOCAL_DIR` for every DAG
the process parses after it, so it is not used here.
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta

import dlt
import pendulum

from makini_source.orchestration import OrchestrationSettings, load_connection, pipeline_name

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[no-redef,attr-defined,unused-ignore]
    from airflow.operators.python import (  # type: ignore[no-redef,unused-ignore]
        PythonOperator,
    )

DAG_ID = "makini"
DEFAULT_SCHEDULE = "@daily"
DEFAULT_RETRIES = 2
MAX_CONCURRENT_LOADS = 16

logger = logging.getLogger("makini_source")


def build_dag(dag_id: str = DAG_ID, settings: OrchestrationSettings | None = None) -> DAG:
    """The DAG: one independent task per configured connection.

    Args:
        dag_id: The DAG's id.
        settings: Where to load; default `OrchestrationSettings.from_config()`, with the
            DuckDB file `$AIRFLOW_HOME/makini.duckdb` unless `makini.duckdb_path` is set.

    Raises:
        ConfigurationError: No connections are configured, or two map to one pipeline name.
    """
    if settings is None:
        from airflow.configuration import AIRFLOW_HOME

        settings = OrchestrationSettings.from_config(f"{AIRFLOW_HOME}/makini.duckdb")
    settings.require_connections("task of the Airflow DAG")
    retries = dlt.config.get("makini.retries", int)
    dag = DAG(
        dag_id=dag_id,
        description="Makini -> dlt, one pipeline per connection",
        schedule=dlt.config.get("makini.schedule", str) or DEFAULT_SCHEDULE,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=MAX_CONCURRENT_LOADS if settings.concurrent else 1,
        default_args={
            "owner": "makini",
            "retries": DEFAULT_RETRIES if retries is None else int(retries),
            "retry_delay": timedelta(minutes=1),
            "execution_timeout": timedelta(hours=4),
        },
        tags=["makini", "dlt"],
    )
    with dag:
        for connection in settings.connections:
            PythonOperator(
                task_id=pipeline_name(connection),
                # only the name travels with the DAG; the token is read when the task runs
                python_callable=functools.partial(load_connection_task, connection, settings),
            )
    return dag


def load_connection_task(connection: str, settings: OrchestrationSettings) -> dict[str, object]:
    """The task of one connection: loads it, logs what it loaded; fails if the connection did.

    Returns:
        The load ids and row counts (Airflow keeps them as the task's XCom).
    """
    result = load_connection(connection, settings)
    logger.info(
        "connection %s: loaded %s in packages %s; now in %s: %s",
        connection,
        result.rows_loaded,
        result.load_ids,
        settings.dataset_name,
        result.rows_in_destination,
    )
    return {
        "load_ids": result.load_ids,
        "rows_loaded": result.rows_loaded,
        "rows_in_destination": result.rows_in_destination,
    }
