"""Terminal output. Text from data or users (titles, reasons, error messages) is escaped, so
square brackets print as written instead of vanishing as rich markup."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

__all__ = ["console", "out", "print_error", "print_recommendation"]

console = Console(stderr=True)  # progress, notes and errors
out = Console()  # results


def print_error(message: str, hint: str | None = None) -> None:
    """One line on stderr: what was wrong, and what to pass instead."""
    line = Text.assemble(("error: ", "bold red"), message)
    if hint:
        line.append(" — ")
        line.append("hint: ", style="yellow")
        line.append(hint)
    console.print(line, soft_wrap=True, highlight=False)


def print_recommendation(rec: Any, title: str) -> None:
    from rich.table import Table

    t = Table(title=escape(title), show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("item")
    t.add_column("why")
    t.add_column("sources", style="dim")
    for n, it in enumerate(rec.items, start=1):
        # every reason cites the user's history unless marked generic (nothing related to cite)
        why = escape(it.reason or "") + ("" if it.cites or not it.reason else " [dim](generic)[/dim]")
        t.add_row(str(n), f"{escape(it.title)} [dim]({escape(it.item_id)})[/dim]", why, escape(", ".join(it.sources)))
    out.print(t)
    if rec.message:
        console.print(Text(rec.message, style="yellow"))
    for stage, why in rec.fallback.items():
        console.print(Text(f"fallback {stage}: {why}", style="dim"))
    timings = ", ".join(f"{k} {v:.0f}" for k, v in rec.timings_ms.items() if "." not in k)
    console.print(Text(f"timings (ms): {timings}", style="dim"))
