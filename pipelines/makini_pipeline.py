"""Run the Makini source into a dlt destination (the `makini-pipeline` command).

Examples::

    python pipelines/makini_pipeline.py --demo            # local sandbox -> makini_demo.duckdb
    python pipelines/makini_pipeline.py                   # configured connections -> DuckDB
    python pipelines/makini_pipeline.py --destination postgres --dataset-name makini_data
    python pipelines/makini_pipeline.py --entities purchase_orders,vendors --start-date 2024-01-01
    python pipelines/makini_pipeline.py check             # sync status of every connection

Without `--demo` the connections come from `.dlt/secrets.toml` or the environment
(`SOURCES__MAKINI__CONNECTIONS='{"acme": "token"}'`), the destination's credentials likewise.
The program itself lives in `makini_source/cli.py`.
"""

from __future__ import annotations

import sys

from makini_source.cli import main

if __name__ == "__main__":
    sys.exit(main())
