"""Dagster definitions: one asset per table, one partition per Makini connection.

    dagster dev -m pipelines.dagster_definitions        # from the repository root

See `docs/orchestration.md` for the settings. The definitions are built by
`makini_source.orchestration.dagster_definitions.build_definitions`, installed with the package.
"""

from makini_source.orchestration.dagster_definitions import build_definitions

defs = build_definitions()
