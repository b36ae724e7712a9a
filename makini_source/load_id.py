"""Every row carries `_dlt_load_id`: the id of the load package that wrote it.

dlt adds this column to Arrow data only when `normalize.parquet_normalizer.add_dlt_load_id` is
configured, and dlt reads `.dlt/config.toml` from the working directory only: the same
pipeline run from the repository, a user's project, cron, Dagster or Airflow made tables of
two shapes, and mixing them in one dataset failed (a NOT NULL `_dlt_load_id` the other runs
did not fill). The source stamps the column itself, so the tables have it wherever the run
starts and whatever is configured (with the setting on, dlt replaces it with the same value).

The column is nullable: a dataset created without it (an older run from outside the
repository) takes it as a new column, its older rows NULL, instead of failing on a NOT NULL
column it cannot add. Join it to `_dlt_loads.load_id` to learn when a row was loaded.
"""

from __future__ import annotations

from typing import Any

import dlt
import pyarrow as pa
from dlt.common.schema.typing import C_DLT_LOAD_ID
from dlt.extract.items import DataItemWithMeta

LOAD_ID_COLUMN = C_DLT_LOAD_ID


def stamp_load_id(item: Any) -> Any:
    """Adds (or replaces) the `_dlt_load_id` column of an Arrow item with the current package's
    load id; other items pass unchanged. Use as a resource map step (`resource.add_map`)."""
    if isinstance(item, DataItemWithMeta):  # an Arrow table with its table hints
        return DataItemWithMeta(item.meta, stamp_load_id(item.data))
    if not isinstance(item, pa.Table):
        return item
    load_id = dlt.current.load_package_state()["load_id"]
    column = pa.repeat(pa.scalar(load_id, pa.string()), item.num_rows)
    index = item.schema.get_field_index(LOAD_ID_COLUMN)
    if index >= 0:
        return item.set_column(index, LOAD_ID_COLUMN, column)
    return item.append_column(pa.field(LOAD_ID_COLUMN, pa.string(), nullable=True), column)
