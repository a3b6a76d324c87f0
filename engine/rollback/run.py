"""cockpit rollback: the way back to MongoDB after the cutover. The changes
the application made to PostgreSQL since the cutover (captured by
change_log's triggers with their row images) are applied to the run's
MongoDB in its shape, in order, batch by batch; after each batch's MongoDB
writes the applied seq is committed in cockpit_migration, so a SIGKILL and
a rerun redo at most that batch, whose writes are idempotent (apply.py)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.stage import StageRun
from engine.migrate.run import MigrationError
from engine.postgres import change_log, rollback_state
from engine.postgres.follow_state import load_follow
from engine.postgres.run_guard import Stage, cutover_time, refusal
from engine.postgres.session import connect
from engine.rollback.apply import apply_batch
from engine.rollback.documents import Ids, from_object_id, uuid_values
from engine.rollback.hold import tables_held
from engine.rollback.net import Net, TruncateCaptured, changes_after, net_effects
from engine.source.mongo import MongoSource

BATCH = 2000  # changes read, reduced and written per step (and per applied-seq commit)
RERUN = "cockpit rollback --mongo URL --postgres URL"


@dataclass(frozen=True)
class RollbackSettings:
    postgres_url: str
    batch: int = BATCH


class Rollback(StageRun):
    def __init__(self, source: MongoSource, settings: RollbackSettings,
                 sinks: Iterable[events.Sink] = (), control: MigrationControl | None = None,
                 mapping: Mapping | None = None) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings

    def run(self) -> dict:
        begun = time.monotonic()
        # Not tuned: the minted ids must be committed for sure (synchronous_commit
        # stays on) before a MongoDB write uses them.
        with connect(self.settings.postgres_url, "rollback", tuned=False) as conn:
            self._refuse_unless_ready(conn)  # before the hold: a refusal waits for no lock
            # Held: nobody writes NextCRM's tables until the rollback ends (a write
            # committed late could take a seq below one applied), no second rollback.
            with tables_held(self.settings.postgres_url, self.mapping, RERUN):
                # Asked again under the hold: a rollback or a --close that ended
                # meanwhile moved the state on.
                return self._carry_back(conn, self._refuse_unless_ready(conn), begun)

    def _carry_back(self, conn: psycopg.Connection, state: rollback_state.RollbackState,
                    begun: float) -> dict:
        seq, end = state.start_seq, change_log.last_seq(conn)
        done: Counter[str] = Counter()
        self.emit(events.Notice("info", f"{end - seq:,} captured change(s) to carry back "
                                "to MongoDB" if end > seq else "nothing left to carry back"))
        while seq < end and not self.control.stopping:
            changes = changes_after(conn, seq, end, self.settings.batch)
            if not changes:
                break
            try:
                nets = net_effects(changes, self.mapping)
            except TruncateCaptured as exc:
                raise MigrationError(str(exc), "Restore the table's rows in PostgreSQL "
                                     "from a backup, or empty the collection in MongoDB "
                                     "by hand, then run the rollback again.") from None
            done += apply_batch(self.source.db, self.mapping, nets, self._ids(conn, nets))
            seq = changes[-1].seq
            rollback_state.save_applied(conn, seq)
            self.emit(events.Notice("info", f"applied up to change {seq:,} of {end:,}"))
        late = change_log.last_seq(conn) - end
        report = {"status": "DONE" if seq >= end else "PAUSED", "appliedSeq": seq,
                  "capturedUpTo": end, "seconds": round(time.monotonic() - begun, 3),
                  **{k.replace(" ", "_"): v for k, v in done.items()}}
        if late > 0:
            report["arrivedDuring"] = late
            self.emit(events.Notice("warning", f"{late} change(s) reached PostgreSQL during the "
                                    "rollback: the application still writes there. Stop it, "
                                    f"then run {RERUN} again"))
        return report

    def _refuse_unless_ready(self, conn: psycopg.Connection) -> rollback_state.RollbackState:
        """The run's source and rules, a recorded cutover, a capture that
        never stopped (nobody else writing NextCRM's tables: engine.rollback.hold)."""
        if refused := refusal(conn, Stage.ROLLBACK, self.source.description,
                              self.mapping.rules.digest):
            raise MigrationError(*refused)
        if cutover_time(load_follow(conn)) is None:
            raise MigrationError("this target has no recorded cutover: MongoDB still holds "
                                 "every write, nothing to roll back",
                                 "Point the application at MongoDB; no rollback is needed.")
        state = rollback_state.load(conn)
        if state is None:
            raise MigrationError("no capture of the application's writes on this target (the "
                                 "cutover was recorded by a version without it)",
                                 "Roll back by hand; the capture starts at the next cutover.")
        if state.capture_closed_at is not None:
            raise MigrationError(
                f"the capture was closed at {state.capture_closed_at:%Y-%m-%d %H:%M:%S} by "
                f"{state.capture_closed_by}: the application's writes since are unknown, so "
                "a rollback would lose them; refused",
                "Past the rollback deadline the way back is a new migration "
                "(PostgreSQL -> MongoDB by hand), not this command.")
        return state

    def _ids(self, conn: psycopg.Connection, nets: list[Net]) -> Ids:
        """ObjectIds for the batch: made from the UUIDs, or minted (and
        committed) for the rows the application created."""
        foreign: set[str] = set()
        for net in nets:
            table = self.mapping.tables[net.table]
            for image in (net.before, net.after):
                foreign.update(u for u in uuid_values(table, image) if not from_object_id(u))
        return Ids(rollback_state.minted(conn, {uuid.UUID(u) for u in foreign}))
