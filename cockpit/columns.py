"""Table columns that fit their pane: the least useful go first, and only
text that may be cut shrinks (with …); an id or a number never does."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

PADDING = 2  # DataTable's cell padding, one each side


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    priority: int  # 1 stays longest
    shrink_to: int | None = None  # None: never cut (ids, numbers, codes)


def fit(columns: list[Column], widths: dict[str, int], room: int) -> dict[str, int]:
    """key -> width of the columns shown, in their order. widths: each
    column's widest value."""
    need = {c.key: max(len(c.label), widths.get(c.key, 0)) for c in columns}
    least = {c.key: min(need[c.key], c.shrink_to or need[c.key]) for c in columns}
    chosen: list[Column] = []
    used = 0
    for c in sorted(columns, key=lambda c: c.priority):
        if chosen and used + least[c.key] + PADDING > room:
            break  # a less useful column never takes the place of a more useful one
        chosen.append(c)
        used += least[c.key] + PADDING
    shown = {c.key: least[c.key] for c in chosen}
    spare = room - used
    for c in sorted(chosen, key=lambda c: c.priority):  # widen what was shrunk
        grow = min(spare, need[c.key] - shown[c.key])
        shown[c.key] += max(0, grow)
        spare -= max(0, grow)
    return {c.key: shown[c.key] for c in columns if c.key in shown}


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class FittedTable(DataTable[object]):
    """A DataTable whose columns are chosen by fit() for its width, again on
    every resize; rows are given whole and cut here where a column may be."""

    def __init__(self, columns: list[Column], follow_row: bool = True,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.spec = columns
        # True: the cursor stays on its row wherever it moves; False: on its place
        # (a table re-sorted as it changes keeps showing its top).
        self.follow_row = follow_row
        self.shown: dict[str, int] = {}
        self.data: dict[str, dict[str, str | Text]] = {}  # row key -> column key -> cell
        self.widths: dict[str, int] = {}  # column key -> widest value

    def set_rows(self, rows: list[tuple[str, dict[str, str | Text]]]) -> None:
        self.data = dict(rows)
        self.widths = {}
        for cells in self.data.values():
            self._measure(cells)
        self._redraw()

    def append(self, row_key: str, cells: dict[str, str | Text]) -> None:
        """One more row: drawn alone unless it changes the columns."""
        self.data[row_key] = cells
        if self._measure(cells) or not self.shown:
            self._redraw()
        else:
            self.add_row(*self._cells(cells), key=row_key)

    def remove(self, row_key: str) -> None:
        self.data.pop(row_key, None)
        if row_key in self.rows:
            self.remove_row(row_key)

    def on_resize(self) -> None:
        self._redraw()

    def _measure(self, cells: dict[str, str | Text]) -> bool:
        """Note the row's widths; whether the columns must be fitted again."""
        grew = False
        for k, v in cells.items():
            n = len(v.plain if isinstance(v, Text) else v)
            if n > self.widths.get(k, 0):
                self.widths[k] = n
                grew = grew or k not in self.shown or n > self.shown[k]
        return grew

    def _redraw(self) -> None:
        # The scrollbar's room is kept whether it shows or not: the columns then
        # depend on the width alone, not on when the rows outgrew the height.
        room = self.size.width - self.styles.scrollbar_size_vertical
        shown = fit(self.spec, self.widths, max(room, 10))
        cursor = self.cursor_row
        key = self._row_key_at(cursor)
        if shown != self.shown:
            self.clear(columns=True)
            for c in self.spec:
                if c.key in shown:
                    self.add_column(c.label, width=shown[c.key], key=c.key)
            self.shown = shown
        else:
            self.clear()
        for row_key, cells in self.data.items():
            self.add_row(*self._cells(cells), key=row_key)
        keys = list(self.data)
        if key in self.data and self.follow_row:
            self.move_cursor(row=keys.index(key), animate=False)
        elif keys:
            self.move_cursor(row=min(cursor, len(keys) - 1), animate=False)

    def _row_key_at(self, row: int) -> str | None:
        if 0 <= row < self.row_count:
            return str(self.coordinate_to_cell_key((row, 0)).row_key.value)
        return None

    def _cells(self, cells: dict[str, str | Text]) -> list[str | Text]:
        return [self._cut(cells.get(k, ""), w) for k, w in self.shown.items()]

    @staticmethod
    def _cut(value: str | Text, width: int) -> str | Text:
        if isinstance(value, Text):
            if value.cell_len > width:
                value = value.copy()
                value.truncate(width, overflow="ellipsis")
            elif value.justify == "right":  # numbers line up by their last digit
                value = Text(" " * (width - value.cell_len)) + value
            return value
        return cut(value, width)
