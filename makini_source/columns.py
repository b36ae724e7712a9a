"""Which column each field of a record lands in: dlt's names, and never two fields in one.

Column names follow dlt's snake_case convention (`orderNo` -> `order_no`,
`customFields.Cost Center` -> `custom_fields__cost_center`), which maps many names to one:
`Cost Center`, `cost_center` and `CostCenter` all become `cost_center`, and every letter
outside ASCII becomes `x` (`成本中心` and `项目代码` both `x`). One column per name, always:

* A field keeps dlt's name for it when no other field of its table has that column already.
  The first field seen with a name keeps it for good (the choice is kept in the resource's
  state), so columns never move between runs; within one page, fields are taken in sorted
  order (`Cost Center` before `cost_center`), whichever connection sends them.
* A field whose dlt name is taken by another field, or whose name loses all its letters and
  digits (other scripts, symbols, the empty name), gets a name of its own: its name folded to
  ASCII where it can be (`Grüße` -> `grusse`, else `x`, or `empty` for the empty name), then
  `_` and 8 hex digits of a hash of the field's path: `custom_fields__cost_center_1f0c93a2`.
  The hash depends on the name alone, so the column is the same in every run and connection.
* A field named like one of the source's own columns (`connection_id`, a parent key,
  `_dlt_id`...) lands under `api_<name>`: record data never sets those.

The custom fields' columns are listed per connection in the table `custom_field_columns`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from dlt.common.normalizers.naming.snake_case import NamingConvention

from makini_source.settings import RESERVED_PREFIX

Path = tuple[str, ...]
_DIGEST_LENGTH = 8
# letters NFKD does not decompose into ASCII
_FOLDED = str.maketrans(
    {"ß": "ss", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Œ": "OE", "œ": "oe", "Ł": "L",
     "ł": "l", "Đ": "D", "đ": "d", "Þ": "TH", "þ": "th", "ı": "i"}
)  # fmt: skip


class ColumnNames:
    """The column of every field path, per destination table, for one run of one entity.

    One instance is shared by the converters of every connection (they run on one thread), so
    a name means one field in a table whichever connection sends it.

    Args:
        assigned: Table -> column -> field path, as kept in the resource state by earlier runs
            (updated in place with this run's new columns).
    """

    def __init__(self, assigned: dict[str, dict[str, list[str]]] | None = None) -> None:
        self._assigned = {} if assigned is None else assigned
        self._naming = NamingConvention()
        # table -> column -> path, of declared and persisted columns alike
        self._owners: dict[str, dict[str, Path]] = {
            table: {column: tuple(path) for column, path in columns.items()}
            for table, columns in self._assigned.items()
        }
        self._columns: dict[tuple[str, Path], str] = {
            (table, path): column
            for table, columns in self._owners.items()
            for column, path in columns.items()
        }

    def declare(self, table: str, paths: Iterable[Path], reserved: Iterable[str]) -> None:
        """Gives the catalogue's fields of a table dlt's names for them (they always have
        them; not kept in state: the catalogue says them again every run), and reserves the
        source's own columns."""
        owners = self._owners.setdefault(table, {})
        for name in reserved:
            owners.setdefault(name, ("\x00own",))
        for path in paths:
            column = self._plain(path, frozenset(reserved))
            if column is None:
                continue
            previous = owners.get(column)
            if previous is not None and previous != path:
                # an undeclared field had this name before the catalogue declared one: the
                # catalogue's field wins, the other one gets a name of its own when seen again
                self._columns.pop((table, previous), None)
                self._assigned.get(table, {}).pop(column, None)
            owners[column] = path
            self._columns[(table, path)] = column

    def column(self, table: str, path: Path, reserved: frozenset[str]) -> str:
        """The column of `path` in `table`, chosen once and then always the same.

        Args:
            table: The destination table.
            path: The field's path in the record (`("customFields", "Cost Center")`).
            reserved: The source's own columns of the table.
        """
        known = self._columns.get((table, path))
        if known is not None:
            return known
        owners = self._owners.setdefault(table, {})
        column = self._plain(path, reserved)
        if column is None or owners.get(column, path) != path:
            column = self._own_name(path, owners)
        owners[column] = path
        self._columns[(table, path)] = column
        self._assigned.setdefault(table, {})[column] = list(path)
        return column

    def _plain(self, path: Path, reserved: frozenset[str]) -> str | None:
        """dlt's name for `path`, `api_`-prefixed where it names one of the source's own
        columns; None when a part of the path loses all its letters and digits."""
        if any(not _has_ascii_alnum(part) for part in path):
            return None
        name = "__".join(self._naming.normalize_identifier(part) for part in path)
        if name in reserved or name.startswith("_dlt"):
            return RESERVED_PREFIX + name
        return name

    def _own_name(self, path: Path, owners: Mapping[str, Path]) -> str:
        """A readable name no other path of the table has: the folded name and a hash."""
        readable = "__".join(self._folded(part) for part in path)
        digest = hashlib.sha256("\x1f".join(path).encode("utf-8", "surrogatepass")).hexdigest()
        length = _DIGEST_LENGTH
        while True:
            column = f"{readable}_{digest[:length]}"
            if owners.get(column, path) == path:
                return column
            length += 4  # another path has this name (a field literally named so)

    def _folded(self, part: str) -> str:
        if not part:
            return "empty"
        ascii_text = (
            unicodedata.normalize("NFKD", part.translate(_FOLDED))
            .encode("ascii", "ignore")
            .decode()
        )
        if not _has_ascii_alnum(ascii_text):
            return "x"
        return self._naming.normalize_identifier(ascii_text)


def _has_ascii_alnum(text: str) -> bool:
    return any(c.isascii() and c.isalnum() for c in text)


def assigned_state(state: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """The columns chosen by earlier runs, in a resource's state (created if absent)."""
    return state.setdefault("columns", {})  # type: ignore[no-any-return]
