"""`improv run --timing-log`: the scheduler's planned vs actual send times as a CSV file, written
as the session goes (`TimingLog`) and read back by the bench, the soak and the tests
(`read_timing_log`), so the format has one owner.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TimingLog:
    """`--timing-log`: every message the scheduler sent as a CSV row, ``planned_s, actual_s, kind,
    channel, pitch, control, source`` (seconds on time.perf_counter; empty where not applicable).
    The scheduler keeps only its latest records (a bounded deque), so the main thread appends the
    new ones to the file every view refresh."""

    HEADER = "planned_s,actual_s,kind,channel,pitch,control,source\n"

    def __init__(self, path: str | Path, records: Any) -> None:
        self.records = records  # the scheduler's deque of (planned_s, actual_s, mido.Message[, source])
        self._last: Any = None  # the newest record written (by identity)
        self._file = open(path, "w")  # noqa: SIM115 - closed in close()
        self._file.write(self.HEADER)

    def drain(self) -> int:
        """Write the records added since the last call; returns how many."""
        snapshot = self.records.copy()  # one C call: atomic against the scheduler's extend
        new = []
        for record in reversed(snapshot):
            if record is self._last:
                break
            new.append(record)
        if new:
            self._last = new[0]
        for record in reversed(new):
            planned, actual, msg = record[0], record[1], record[2]
            source = record[3] if len(record) > 3 else ""
            self._file.write(f"{planned:.6f},{actual:.6f},{msg.type},{getattr(msg, 'channel', '')},"
                             f"{getattr(msg, 'note', '')},{getattr(msg, 'control', '')},{source}\n")
        if new:
            self._file.flush()  # readable as the session goes (a few times a second)
        return len(new)

    def close(self) -> None:
        self.drain()
        self._file.close()


@dataclass(frozen=True, slots=True)
class TimingRow:
    """One message the scheduler sent; times in seconds on time.perf_counter, None where the
    message has no such field."""

    planned_s: float
    actual_s: float
    kind: str  # mido's message type: note_on, note_off, control_change, clock, ...
    channel: int | None
    pitch: int | None
    control: int | None
    source: str  # who planned it: response, duet, thru, panic, ... ("" for an unnamed one)

    def midi_bytes(self) -> list[int]:
        """The message as raw bytes, enough to pair notes: the log keeps no velocity or CC value,
        so a note-on has velocity 1 and a control change value 0."""
        channel = self.channel or 0
        if self.kind == "note_on":
            return [0x90 | channel, self.pitch or 0, 1]
        if self.kind == "note_off":
            return [0x80 | channel, self.pitch or 0, 0]
        if self.kind == "control_change":
            return [0xB0 | channel, self.control or 0, 0]
        return [0xF8]


def read_timing_log(path: str | Path) -> list[TimingRow]:
    """The rows of a `--timing-log` CSV file, in the order sent. A file the daemon is still
    writing may end in half a line: that row is left out."""
    with open(path, newline="") as f:
        return [TimingRow(float(r["planned_s"]), float(r["actual_s"]), r["kind"], _int(r["channel"]),
                          _int(r["pitch"]), _int(r["control"]), r["source"])
                for r in csv.DictReader(f) if r["source"] is not None]


def _int(text: str) -> int | None:
    return int(text) if text else None
