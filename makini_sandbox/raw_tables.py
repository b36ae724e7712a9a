"""Raw tables: the connected system's own tables, rows untyped (``/api/raw/tables``).

Makini's reference (``openapi/oas3_system.json``) lists ``GET /api/raw/tables`` and
``GET /api/raw/tables/{table}/data`` (``filter``, ``page``, ``sort``) and types both answers
as a bare ``object``; the shapes here are the sandbox's decision (README, "Raw tables").

Each connection has a few deterministic tables named as its system names them: SAP-like
for an ERP (``EKKO``, ``EKPO``, ``LFA1``, ``MARA``), Maximo-like for an EAM
(``WORKORDER``, ``ASSET``, ``LOCATIONS``). Rows are flat objects of scalars of mixed types:
strings (SAP's dates are ``YYYYMMDD`` strings, its keys zero-padded), integers, floats,
booleans, nulls, and one column per table whose type changes from row to row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .generator import seed_int

#: column types as listed by ``GET /api/raw/tables`` (``mixed``: varies by row)
COLUMN_TYPES = ("string", "integer", "number", "boolean", "mixed")

Value = str | int | float | bool | None
#: (rng, row number 1..n) -> value
Make = Callable[[random.Random, int], Value]


@dataclass(frozen=True)
class Column:
    """One column: its name, listed type and how its values are made."""

    name: str
    type: str
    make: Make


@dataclass(frozen=True)
class RawTable:
    """One raw table of a connected system."""

    name: str
    description: str
    columns: tuple[Column, ...]

    def describe(self, rows: int) -> dict[str, Any]:
        """The table as ``GET /api/raw/tables`` lists it."""
        return {
            "name": self.name,
            "description": self.description,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "rows": rows,
        }

    def rows(self, seed: int, connection: str, count: int) -> list[dict[str, Value]]:
        """The table's ``count`` rows (the same for the same seed and connection)."""
        out = []
        for n in range(1, count + 1):
            rng = random.Random(seed_int(seed, connection, "raw", self.name, n))
            out.append({c.name: c.make(rng, n) for c in self.columns})
        return out


# -- value makers ----------------------------------------------------------------------------


def _fixed(value: Value) -> Make:
    return lambda rng, n: value


def _choice(*values: Value) -> Make:
    return lambda rng, n: values[int(rng.random() * len(values))]


def _padded(width: int, start: int = 0) -> Make:
    """SAP-style zero-padded numbers as strings (``0000100001``)."""
    return lambda rng, n: f"{start + n:0{width}d}"


def _ref(width: int, start: int, span: int) -> Make:
    return lambda rng, n: f"{start + 1 + int(rng.random() * span):0{width}d}"


def _int(lo: int, hi: int) -> Make:
    return lambda rng, n: lo + int(rng.random() * (hi - lo + 1))


def _float(hi: float, places: int) -> Make:
    return lambda rng, n: round(rng.random() * hi, places)


def _bool(p_true: float = 0.5) -> Make:
    return lambda rng, n: rng.random() < p_true


def _nullable(make: Make, p_null: float) -> Make:
    return lambda rng, n: None if rng.random() < p_null else make(rng, n)


def _sap_date(rng: random.Random, n: int) -> str:
    """``YYYYMMDD``, SAP's date as a string (``00000000`` for none, as SAP sends it)."""
    if rng.random() < 0.1:
        return "00000000"
    return f"{2023 + int(rng.random() * 2)}{1 + int(rng.random() * 12):02d}{1 + int(rng.random() * 28):02d}"


def _iso_time(rng: random.Random, n: int) -> str:
    """Maximo's timestamps: ISO 8601 with an offset."""
    month, day, hour = (
        1 + int(rng.random() * 12),
        1 + int(rng.random() * 28),
        int(rng.random() * 24),
    )
    return f"2024-{month:02d}-{day:02d}T{hour:02d}:{int(rng.random() * 60):02d}:00-05:00"


def _mixed(rng: random.Random, n: int) -> Value:
    """A column whose type changes by row: integer, string, float, boolean or null."""
    return (n * 7, f"R{n:03d}", n + 0.5, n % 2 == 0, None)[int(rng.random() * 5)]


def _words(*words: str) -> Make:
    return lambda rng, n: " ".join(
        words[int(rng.random() * len(words))] for _ in range(1 + int(rng.random() * 3))
    ).upper()


_PARTS = ("PUMP", "VALVE", "BEARING", "SEAL", "MOTOR", "FILTER", "GASKET", "BELT")

ERP_TABLES: tuple[RawTable, ...] = (
    RawTable(
        "EKKO",
        "Purchasing document header",
        (
            Column("EBELN", "string", _padded(10, 4_500_000_000)),
            Column("BUKRS", "string", _choice("1000", "2000", "3000")),
            Column("BSTYP", "string", _fixed("F")),
            Column("BSART", "string", _choice("NB", "FO", "UB")),
            Column("LIFNR", "string", _ref(10, 100_000, 50)),
            Column("AEDAT", "string", _sap_date),
            Column("ERNAM", "string", _choice("JSMITH", "MMUELLER", "BATCH_USER")),
            Column("WAERS", "string", _choice("EUR", "USD", "GBP")),
            Column("WKURS", "number", _float(2, 5)),
            Column("ZTERM", "string", _nullable(_choice("0001", "NT30", "NT60"), 0.2)),
            Column("LOEKZ", "string", _choice("", "", "", "L")),
            Column("NETWR", "number", _float(250_000, 2)),
            Column("ZZ_PRIORITY", "mixed", _mixed),
        ),
    ),
    RawTable(
        "EKPO",
        "Purchasing document item",
        (
            Column("EBELN", "string", lambda rng, n: f"{4_500_000_000 + 1 + (n - 1) // 3:010d}"),
            Column("EBELP", "integer", lambda rng, n: 10 * (1 + (n - 1) % 3)),
            Column("MATNR", "string", _ref(18, 0, 200)),
            Column("TXZ01", "string", _words(*_PARTS)),
            Column("MENGE", "number", _float(1000, 3)),
            Column("MEINS", "string", _choice("EA", "KG", "M", "ST")),
            Column("NETPR", "number", _float(5000, 2)),
            Column("PEINH", "integer", _choice(1, 1, 10, 100)),
            Column("ELIKZ", "boolean", _bool(0.3)),
            Column("LOEKZ", "string", _choice("", "", "", "L")),
            Column("ZZ_COST_OBJECT", "mixed", _mixed),
        ),
    ),
    RawTable(
        "LFA1",
        "Vendor master (general section)",
        (
            Column("LIFNR", "string", _padded(10, 100_000)),
            Column("NAME1", "string", _words("ACME", "GLOBAL", "STEEL", "PARTS", "GMBH", "INC")),
            Column("LAND1", "string", _choice("DE", "US", "GB", "FR", "JP")),
            Column("ORT01", "string", _choice("MÜNCHEN", "SPRINGFIELD", "LEEDS", "大阪市")),
            Column("PSTLZ", "string", _nullable(_int(10000, 99999), 0.1)),
            Column("SPERR", "boolean", _bool(0.1)),
            Column("ERDAT", "string", _sap_date),
            Column("ZZ_RATING", "mixed", _mixed),
        ),
    ),
    RawTable(
        "MARA",
        "General material data",
        (
            Column("MATNR", "string", _padded(18)),
            Column("MTART", "string", _choice("ROH", "HALB", "FERT", "ERSA")),
            Column("MATKL", "string", _choice("001", "002", "010")),
            Column("MEINS", "string", _choice("EA", "KG", "M", "ST")),
            Column("BRGEW", "number", _float(100, 3)),
            Column("NTGEW", "number", _nullable(_float(100, 3), 0.2)),
            Column("LAEDA", "string", _sap_date),
            Column("LVORM", "boolean", _bool(0.05)),
            Column("ZZ_LEGACY_ID", "mixed", _mixed),
        ),
    ),
)

EAM_TABLES: tuple[RawTable, ...] = (
    RawTable(
        "WORKORDER",
        "Work orders",
        (
            Column("WONUM", "string", lambda rng, n: f"WO{1000 + n}"),
            Column("SITEID", "string", _choice("BEDFORD", "TEXAS", "NASHUA")),
            Column("STATUS", "string", _choice("WAPPR", "APPR", "INPRG", "COMP", "CLOSE")),
            Column("DESCRIPTION", "string", _words(*_PARTS, "INSPECT", "REPLACE")),
            Column("WORKTYPE", "string", _nullable(_choice("PM", "CM", "EM"), 0.2)),
            Column("WOPRIORITY", "integer", _nullable(_int(1, 5), 0.2)),
            Column("ESTDUR", "number", _float(40, 2)),
            Column("ACTLABCOST", "number", _float(10_000, 2)),
            Column("REPORTDATE", "string", _iso_time),
            Column("ISTASK", "boolean", _bool(0.2)),
            Column("PARENT", "string", _nullable(lambda rng, n: f"WO{1000 + max(1, n - 1)}", 0.8)),
            Column("WOEQ1", "mixed", _mixed),
        ),
    ),
    RawTable(
        "ASSET",
        "Assets",
        (
            Column("ASSETNUM", "string", lambda rng, n: f"{11_000 + n}"),
            Column("SITEID", "string", _choice("BEDFORD", "TEXAS", "NASHUA")),
            Column("DESCRIPTION", "string", _words(*_PARTS)),
            Column("STATUS", "string", _choice("OPERATING", "NOT READY", "DECOMMISSIONED")),
            Column("PURCHASEPRICE", "number", _float(500_000, 2)),
            Column("INSTALLDATE", "string", _nullable(_iso_time, 0.3)),
            Column("ISRUNNING", "boolean", _bool(0.8)),
            Column("PRIORITY", "integer", _int(1, 10)),
            Column("SERIALNUM", "string", _nullable(lambda rng, n: f"SN-{n:05d}", 0.3)),
            Column("ASSETTAG", "mixed", _mixed),
        ),
    ),
    RawTable(
        "LOCATIONS",
        "Operating locations and storerooms",
        (
            Column("LOCATION", "string", lambda rng, n: f"BR{200 + n}"),
            Column("DESCRIPTION", "string", _words("BOILER", "ROOM", "BAY", "EAST", "WEST")),
            Column("TYPE", "string", _choice("OPERATING", "STOREROOM", "REPAIR")),
            Column("SITEID", "string", _choice("BEDFORD", "TEXAS", "NASHUA")),
            Column("DISABLED", "boolean", _bool(0.1)),
            Column("CHANGEDATE", "string", _iso_time),
            Column("GLACCOUNT", "mixed", _mixed),
        ),
    ),
)

TABLES_BY_FAMILY: dict[str, tuple[RawTable, ...]] = {"erp": ERP_TABLES, "eam": EAM_TABLES}


def tables_of(family: str) -> dict[str, RawTable]:
    """A connection family's raw tables by name."""
    return {t.name: t for t in TABLES_BY_FAMILY[family]}


# -- querying ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCondition:
    """One filter on a column: ``op`` is ``eq``, ``gt``, ``gteq``, ``lt``, ``lted``,
    ``contains`` or ``startsWith``; ``value`` the text from the query string."""

    column: str
    op: str
    value: str


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _matches(value: Value, cond: RawCondition) -> bool:
    """Whether a row value passes a condition.

    Numbers compare numerically with a numeric filter value, booleans equal ``true``/``false``
    (or ``1``/``0``), everything else compares as text (``contains``/``startsWith`` always
    do, case-sensitively). A null value passes nothing.
    """
    if value is None:
        return False
    op, text = cond.op, cond.value
    if isinstance(value, bool):
        if op != "eq":
            return False
        return text.lower() in (("true", "1") if value else ("false", "0"))
    if op == "contains":
        return text in str(value)
    if op == "startsWith":
        return str(value).startswith(text)
    number = _as_number(text) if isinstance(value, (int, float)) else None
    left: Any = value if number is not None else str(value)
    right: Any = number if number is not None else text
    return {
        "eq": left == right,
        "gt": left > right,
        "gteq": left >= right,
        "lt": left < right,
        "lted": left <= right,
    }[op]


def _sort_key(value: Value) -> tuple[int, Any]:
    """Nulls first, then booleans, numbers, strings (a mixed column sorts by type first)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, value)


def select(
    rows: Sequence[dict[str, Value]],
    conditions: Sequence[RawCondition],
    match_any: bool,
    sort: Sequence[tuple[str, bool]],
) -> list[dict[str, Value]]:
    """The rows passing the filters, in the sort's order (ties keep the table's order)."""
    if conditions:
        combine = any if match_any else all
        rows = [r for r in rows if combine(_matches(r.get(c.column), c) for c in conditions)]
    out = list(rows)
    for column, desc in reversed(sort):
        out.sort(key=lambda r, c=column: _sort_key(r.get(c)), reverse=desc)  # type: ignore[misc]
    return out


__all__ = ["COLUMN_TYPES", "RawCondition", "RawTable", "select", "tables_of"]
