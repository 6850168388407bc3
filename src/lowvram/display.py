"""Tables that stay readable at any terminal width (80 columns included) and in logs.

rich lays tables out to the console's width, but when the columns cannot fit it cuts cells to "r…". Here a
table is printed as a table only when every column fits without cutting a word; otherwise it becomes a
vertical `header: value` list per row (`fit_table`), or — for a wide grid such as `lowvram gpus` — it is
split into several tables of as many columns as fit, each repeating the first column (`split_table`).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

INDENT = "  "  # before each `header: value` line of the vertical layout


def _table(columns, rows, title=None, caption=None) -> Table:
    t = Table(title=title, caption=caption, title_justify="left")
    for header, justify in columns:
        t.add_column(header, justify=justify, overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


UNBOUNDED = 10**6  # measure as if the console were this wide: rich clamps a measurement to the width it is given


def _width(console: Console, table: Table, tight: bool) -> int:
    """The table's width with every word whole (tight) or every cell on one line."""
    from rich.measure import Measurement

    m = Measurement.get(console, console.options.update_width(UNBOUNDED), table)
    return m.minimum if tight else m.maximum


def fit_table(console: Console, columns, rows, title: str | None = None, caption: str | None = None) -> None:
    """Print rows under `columns` ((header, justify) pairs): a table when it fits the console's width with
    no word cut, else each row as its first cell followed by indented `header: value` lines."""
    table = _table(columns, rows, title, caption)
    if _width(console, table, tight=True) <= console.width:
        console.print(table)
        return
    if title:
        console.print(title, soft_wrap=False, highlight=False)
    for r in rows:
        console.print(f"[bold]{r[0]}[/bold]", soft_wrap=False, highlight=False)
        for (header, _), cell in zip(columns[1:], r[1:]):
            if cell not in ("", None):
                console.print(f"{INDENT}{header}: {cell}", soft_wrap=False, highlight=False)
    if caption:
        console.print(caption, soft_wrap=False, highlight=False)


def split_table(console: Console, columns, rows, title: str | None = None, caption: str | None = None) -> None:
    """Print a wide grid as consecutive tables, each with the first column and as many others as fit the
    console's width unwrapped (at least one)."""
    first, rest = columns[0], list(range(1, len(columns)))
    groups: list[list[int]] = []
    while rest:
        group = [rest.pop(0)]
        while rest:
            trial = _table([first] + [columns[i] for i in group + [rest[0]]], [[r[0]] + [r[i] for i in group + [rest[0]]] for r in rows])
            if _width(console, trial, tight=False) > console.width:
                break
            group.append(rest.pop(0))
        groups.append(group)
    for n, group in enumerate(groups):
        head = title if n == 0 else None
        tail = caption if n == len(groups) - 1 else None
        console.print(_table([first] + [columns[i] for i in group], [[r[0]] + [r[i] for i in group] for r in rows], head, tail))
