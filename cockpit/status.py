"""The top of the screen: a state pill readable from across the room
(RUNNING, PAUSED, FOLLOWING, FINISHED, FAILED...) with the alerts that hold,
then the source and the target, each named once, with what they answered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from engine.core.redact import redact_url

if TYPE_CHECKING:
    from cockpit.config import CockpitConfig

PILL_STYLE = {"RUNNING": "bold black on green", "STARTING": "bold black on green",
              "PAUSED": "bold black on yellow", "FOLLOWING": "bold black on cyan",
              "VALIDATING": "bold black on cyan", "RETRYING": "bold black on cyan",
              "ROLLING BACK": "bold black on magenta",
              "FINISHED": "bold white on blue", "CUT OVER": "bold white on blue",
              "FAILED": "bold white on red", "NOT STARTED": "bold reverse"}
TITLE = "Migration Cockpit: NextCRM MongoDB → PostgreSQL"
PG_CONNECT_TIMEOUT_S = 5  # engine.runbook.checks.pg


def pill_text(pill: str, alerts: int, title: str = TITLE) -> Text:
    text = Text.assemble((f" {pill} ", PILL_STYLE.get(pill, "reverse")))
    if alerts:
        text.append(f" {alerts} ALERT{'S' if alerts > 1 else ''} ", style="bold white on red")
        text.append(" (pane 4)", style="red")
    text.append(f"  {title}", style="bold")
    return text


class StatusBar(Static):
    """The pill line; the app gives pill and alerts, this draws them."""

    DEFAULT_CSS = "StatusBar { height: 1; background: $panel; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(pill_text("NOT STARTED", 0), **kwargs)  # type: ignore[arg-type]
        self.shown = ("NOT STARTED", 0)

    def show(self, pill: str, alerts: int) -> None:
        if (pill, alerts) != self.shown:
            self.shown = (pill, alerts)
            self.update(pill_text(pill, alerts))


class Connections(Static):
    """Source and target, each named once: what it is, then what it answered
    (connecting..., its collections, or the cause and the fix)."""

    def __init__(self, source: str, target: str, source_wait: str, target_wait: str,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.names = {"source": source, "target": target}
        self.states: dict[str, tuple[bool | None, str]] = {
            "source": (None, source_wait), "target": (None, target_wait)}

    def on_mount(self) -> None:
        self._draw()

    def say(self, side: str, ok: bool | None, detail: str) -> None:
        self.states[side] = (ok, detail)
        self._draw()

    def _draw(self) -> None:
        text = Text()
        for side in ("source", "target"):
            ok, detail = self.states[side]
            mark, style = {True: ("✓", "green"), False: ("✗", "bold red")}.get(
                ok, ("…", "yellow"))  # type: ignore[arg-type]
            if text:
                text.append("   ")
            text.append(f"{side.title()} ", style="dim")
            text.append(self.names[side])
            text.append(f" {mark} {detail}", style=style)
        self.update(text)


def connection_names(c: CockpitConfig) -> tuple[str, str, str, str]:
    """Source and target as the lead reads them (no password), and what each
    waits for until it has answered."""
    source = f"dump {c.dump}" if c.dump else redact_url(
        c.mongo_url or "(none: give --mongo or --dump)")
    target = redact_url(c.postgres_url or "(none: give --postgres)")
    source_wait = ("reading…" if c.dump else
                   f"connecting… (timeout {c.source_timeout:.0f} s)" if c.mongo_url else "")
    target_wait = f"connecting… (timeout {PG_CONNECT_TIMEOUT_S} s)" if c.postgres_url else ""
    return source, target, source_wait, target_wait
