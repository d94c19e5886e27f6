"""`--timing-log` round trip: what the daemon's writer puts in the CSV file is what the reader
gives back, row for row, and it is written as the session goes (drained in pieces)."""

from __future__ import annotations

from collections import deque

import mido
import pytest

from improv.pairing import pair_messages
from improv.scheduler import SendRecord
from improv.timing_log import TimingLog, TimingRow, read_timing_log


def test_rows_read_back_are_the_records_written(tmp_path):
    on = mido.Message("note_on", channel=2, note=60, velocity=80)
    records = deque([SendRecord(10.0, 10.000123, on, "response"),
                     SendRecord(10.5, 10.5004, mido.Message("note_off", channel=2, note=60), "response"),
                     SendRecord(11.0, 11.0, mido.Message("control_change", channel=2, control=123), "panic"),
                     SendRecord(11.25, 11.2501, mido.Message("clock"), "clock")], maxlen=3)
    log = TimingLog(tmp_path / "timing.csv", records)
    assert log.drain() == 3  # the scheduler's deque keeps only its latest records
    records.append(SendRecord(12.0, 12.001, on.copy(note=64, channel=0), "duet"))
    assert read_timing_log(tmp_path / "timing.csv")[-1].kind == "clock"  # flushed as it goes
    log.close()
    rows = read_timing_log(tmp_path / "timing.csv")
    assert rows == [
        TimingRow(10.5, 10.5004, "note_off", 2, 60, None, "response"),
        TimingRow(11.0, 11.0, "control_change", 2, None, 123, "panic"),
        TimingRow(11.25, 11.2501, "clock", None, None, None, "clock"),
        TimingRow(12.0, 12.001, "note_on", 0, 64, None, "duet"),
    ]
    assert rows[0].planned_s == pytest.approx(10.5, abs=1e-6)


def test_a_half_written_last_line_is_left_out_and_rows_pair_as_notes(tmp_path):
    path = tmp_path / "timing.csv"
    path.write_text(TimingLog.HEADER + "1.000000,1.000100,note_on,0,60,,duet\n"
                    "1.500000,1.500100,note_on,0,62,,duet\n2.000000,2.000000,control_change,0,,123,panic\n"
                    "2.5,2.5,note_on,0,6")
    rows = read_timing_log(path)
    assert [r.pitch for r in rows] == [60, 62, None]
    notes, hanging = pair_messages([(r.actual_s, r.midi_bytes()) for r in rows], restrike_ends=False)
    assert hanging == [] and [(n.pitch, n.end) for n in notes] == [(60, 2.0), (62, 2.0)]  # All Notes Off ends both
