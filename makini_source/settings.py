"""Constants and the entity catalogue: what the source reads and where it lands.

The catalogue is data, not code: one `EntitySpec` per list endpoint of the Makini contract.
Adding an entity means adding a row here, not writing a new resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BASE_URL = "https://api.makini.io"
API_PREFIX = "/api/v1"
SYNC_STATUS_PATH = f"{API_PREFIX}/sync-status"
DEFAULT_CONNECTION_NAME = "default"

# Exact decimals land as DECIMAL(38, 9): the widest type BigQuery's NUMERIC, Snowflake's
# NUMBER and Postgres/DuckDB DECIMAL all hold exactly. A value with more than 9 fractional
# digits fails loudly instead of being rounded.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 9

# Money and quantity fields of the contract, wherever they appear.
DECIMAL_FIELDS: frozenset[str] = frozenset(
    {
        "totalNetValue",
        "totalGrossValue",
        "quantity",
        "receivedQuantity",
        "price",
        "discount",
        "lineTaxValue",
        "lineTotalValue",
    }
)

# Timestamp fields (RFC 3339 UTC; date-only `YYYY-MM-DD` is accepted and means midnight UTC).
TIMESTAMP_FIELDS: frozenset[str] = frozenset(
    {
        "createdAt",
        "updatedAt",
        "deletedAt",
        "dueAt",
        "approvedAt",
        "completedAt",
        "orderDate",
        "shipmentDate",
        "deliveryAt",
        "activatedAt",
        "deactivatedAt",
        "scheduledAt",
    }
)

BOOLEAN_FIELDS: frozenset[str] = frozenset({"isAssembly", "isActive", "isPhysical"})


@dataclass(frozen=True)
class EntitySpec:
    """One list endpoint of the Makini API and the table it lands in.

    Attributes:
        name: Entity name used in configuration and errors (`purchase_orders`).
        path: URL path segment (`purchase-orders`).
        table: Destination table name.
        max_page_size: Largest `limit` the API accepts for this entity.
        fields: Top-level fields of Makini's published model, in the order columns are created.
        child_field: Field holding a nested list that lands in its own table, if any.
        child_table: The child table's name.
        child_fields: Fields of one child record.
    """

    name: str
    path: str
    table: str
    max_page_size: int
    fields: tuple[str, ...]
    child_field: str | None = None
    child_table: str | None = None
    child_fields: tuple[str, ...] = field(default_factory=tuple)


_COMMON = ("key", "createdAt", "updatedAt", "deletedAt")

PO_LINE_FIELDS = (
    "key",
    "lineNo",
    "code",
    "type",
    "name",
    "description",
    "lineRef",
    "materialKey",
    "productKey",
    "assetKey",
    "accountKey",
    "vendorKey",
    "locationKey",
    "storeroomKey",
    "statusKey",
    "quantity",
    "receivedQuantity",
    "uomKey",
    "currencyKey",
    "price",
    "discount",
    "lineTaxValue",
    "lineTotalValue",
    "notes",
    "deliveryAt",
    "dueAt",
    "createdAt",
    "updatedAt",
    "deletedAt",
)

ENTITIES: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        EntitySpec(
            name="purchase_orders",
            path="purchase-orders",
            table="purchase_orders",
            max_page_size=200,
            fields=_COMMON
            + (
                "orderNo",
                "title",
                "description",
                "statusKey",
                "siteKey",
                "organizationKey",
                "vendorKey",
                "locationKey",
                "currencyKey",
                "orderDate",
                "dueAt",
                "approvedAt",
                "completedAt",
                "shipmentDate",
                "shippingMethod",
                "terms",
                "notes",
                "shipmentAddress",
                "billingAddress",
                "deliveryAddress",
                "totalNetValue",
                "totalGrossValue",
                "userRequestedKey",
                "userApprovedKey",
            ),
            child_field="lineItems",
            child_table="purchase_order_line_items",
            child_fields=PO_LINE_FIELDS,
        ),
        EntitySpec(
            name="vendors",
            path="vendors",
            table="vendors",
            max_page_size=500,
            fields=_COMMON + ("name", "code", "companyKey", "organizationKey"),
        ),
        EntitySpec(
            name="materials",
            path="materials",
            table="materials",
            max_page_size=500,
            fields=_COMMON
            + (
                "organizationKey",
                "code",
                "partNumber",
                "name",
                "description",
                "notes",
                "criticality",
                "isAssembly",
                "isActive",
                "manufacturerName",
                "uomKey",
                "parentKeys",
                "assetKeys",
                "supplyOptions",
                "priceLevels",
                "inventories",
                "dimensions",
            ),
        ),
        EntitySpec(
            name="sites",
            path="sites",
            table="sites",
            max_page_size=500,
            fields=_COMMON
            + (
                "organizationKey",
                "name",
                "code",
                "description",
                "contact",
                "customerKey",
                "lat",
                "lng",
                "address",
                "billingAddress",
                "properties",
                "notes",
            ),
        ),
        EntitySpec(
            name="assets",
            path="assets",
            table="assets",
            max_page_size=250,
            fields=_COMMON
            + (
                "siteKey",
                "parentKey",
                "vendorKey",
                "teamKey",
                "locationKey",
                "customerKey",
                "accountKeys",
                "name",
                "description",
                "makeCompanyKey",
                "assetTemplateKey",
                "isPhysical",
                "notes",
                "categoryName",
                "criticality",
                "isActive",
                "makeName",
                "modelName",
                "serialNumber",
                "activatedAt",
                "deactivatedAt",
                "documents",
            ),
        ),
        EntitySpec(
            name="work_orders",
            path="work-orders",
            table="work_orders",
            max_page_size=250,
            fields=_COMMON
            + (
                "parentKey",
                "locationKey",
                "siteKey",
                "assetKey",
                "accountKey",
                "title",
                "serviceRequestKey",
                "code",
                "pmKey",
                "teamKey",
                "laborAssignedKey",
                "userApprovedKey",
                "assetDowntimeKey",
                "organizationKey",
                "instructions",
                "status",
                "statusKey",
                "severity",
                "estimatedTime",
                "roleName",
                "categoryName",
                "storeroomKey",
                "notes",
                "approvedAt",
                "dueAt",
                "scheduledAt",
                "actualTime",
                "completedAt",
                "completionRemarks",
                "materialCount",
                "tasks",
                "documents",
                "resources",
            ),
        ),
    )
}

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

# Columns every table carries besides the record's own fields.
CONNECTION_COLUMN = "connection_id"
PARENT_KEY_COLUMN = "purchase_order_key"
PARENT_VERSION_COLUMN = "purchase_order_updated_at"
# Rows flagged here are never inserted: they only make the merge drop a PO's old lines.
LINE_MARKER_COLUMN = "_makini_po_marker"

# A sync point this far beyond the local clock is not stored as a watermark: clocks drift a
# little, but a sync point in the future would make every later run read nothing.
FUTURE_SYNC_POINT_TOLERANCE_SECONDS = 300
