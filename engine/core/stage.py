"""What every run of an engine stage shares: the sinks it reports its events
to, the control it obeys (pause, stop), and the mapping it works by."""

from __future__ import annotations

from collections.abc import Iterable

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping, nextcrm


class StageRun:
    def __init__(self, sinks: Iterable[events.Sink] = (),
                 control: MigrationControl | None = None,
                 mapping: Mapping | None = None) -> None:
        self.sinks = list(sinks)
        self.control = control or MigrationControl()
        self.mapping = mapping or nextcrm()

    def emit(self, event: events.Event) -> None:
        for sink in self.sinks:
            sink(event)
