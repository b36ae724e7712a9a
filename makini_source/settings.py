"""Constants of the source: defaults, sizes and the names of its own columns.

What Makini serves (entities, fields, types, child lists) is in the catalogue
(`catalogue.py`, generated from Makini's OpenAPI files), not here.
"""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.makini.io"
DEFAULT_CONNECTION_NAME = "default"

# Exact decimals land as DECIMAL(38, 9): the widest type BigQuery's NUMERIC, Snowflake's
# NUMBER and Postgres/DuckDB DECIMAL all hold exactly. A value with more than 9 fractional
# digits fails loudly instead of being rounded.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 9

# Rows (all tables of an entity) collected from consecutive pages before they go to dlt as
# one table each: big enough that dlt's per-item cost fades, small enough to stay a few MB.
BATCH_ROWS = 20_000

# Records of consecutive pages (of one record type) converted to Arrow together: conversion
# costs a few pyarrow calls per column whatever the rows, so five PO pages at once cost about
# 35% less CPU than one by one (30 pages: 119 -> 78 ms). The pages wait as parsed: ~10 MB
# per 1,000 POs.
CONVERT_BATCH_RECORDS = 1_000

# A first sync of an entity with at least 2 x this many records in its window reads it in
# time slices at once (up to the source's `max_slices`), one slice per this many records.
SLICE_MIN_RECORDS = 20_000

# Pages a listing thread may have fetched ahead of the resource that converts them.
PAGES_AHEAD = 2
# Listings of one entity running at once (over all connections and time slices); the rest
# wait for a free place, so a run over hundreds of connections does not start hundreds of
# threads.
MAX_CONCURRENT_LISTINGS = 16

# A sync point this far beyond the local clock is not stored as a watermark: clocks drift a
# little, but a sync point in the future would make every later run read nothing.
FUTURE_SYNC_POINT_TOLERANCE_SECONDS = 300

# The unified dialect's sync point semantics are unverified on a live tenant: by default an
# incremental run re-reads this margin before the stored watermark (v1: none).
UNIFIED_LOOKBACK_SECONDS = 600

# Columns every table carries besides the record's own fields.
CONNECTION_COLUMN = "connection_id"
# The v1 object holding a record's custom fields (the unified dialect's extra top-level keys
# are nested under it too, so both make `custom_fields__<name>` columns).
CUSTOM_FIELDS = "customFields"
# Child rows flagged here are never inserted: they only make the merge drop a parent's old
# children (a parent without children, or children of a superseded version).
MARKER_COLUMN = "_makini_marker"
# The table listing, per connection, which column each custom field landed in.
CUSTOM_FIELD_COLUMNS_TABLE = "custom_field_columns"
# Columns one table may have (all connections' custom fields share a table): well below
# PostgreSQL's hard limit of 1,600 and what DuckDB loads within a small memory limit.
MAX_COLUMNS_PER_TABLE = 1_000
# Empty pages in a row (each with a new cursor) after which a listing is taken for endless.
MAX_EMPTY_PAGES = 1_000
# A record field whose column name is one of the source's own columns (`connection_id`, a
# parent key, `_dlt_id`...) lands under this prefix instead (`api_connection_id`).
RESERVED_PREFIX = "api_"
