"""Airflow DAG `makini`: one task per Makini connection (`makini_source.orchestration`).

Copy this file into Airflow's dags folder; see `docs/orchestration.md` for the settings. The
DAG is built by `makini_source.orchestration.airflow_dag.build_dag`, installed with the package.
"""

from makini_source.orchestration.airflow_dag import build_dag

dag = build_dag()
