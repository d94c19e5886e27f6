"""The MIDI section's grid error: improv following a JACK client's MIDI clock (`--clock midi`), its
answers' arrival against that client's own grid, without and with the `--latency-ms` that
`improv calibrate --loopback` measures on the same server.

The clock client (benchmarks.harness.clients.ClockSource) sends 24-ppqn clock through a
FramePlayer, which writes each tick at the frame of its deadline, as a DAW does: the deadlines
are the sender's grid, exactly (`clock_sender_late*`, ~0, shows any tick that missed its frame,
so a regression shows). The same player plays 4-beat calls on the clock's beats, improv answers
on the grid it estimates from the ticks it receives, the recorder stamps the answers at their
frames. Error = arrival - the point of the sender's grid (at the model's token resolution,
1/ticks_per_beat of a beat) the note was meant for: the one nearest the note's plan in the
daemon's timing log (its send time plus the --latency-ms), so a note that arrives more than half
a grid step late is not taken for an early one (half a step is 21 ms at 120 bpm: a loaded
machine reaches it). Signed: the p50 says where answers land (JACK's way in and way out,
uncompensated: late), the p99 of |error| how far they scatter.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.harness.clients import ClockSource, Recorder, FramePlayer, sleep_until
from benchmarks.report import Report

LOCK_S = 1.0  # the follower settles on the tempo before the first call
CALL_BEATS = 10  # call (4 beats) + silence (1) + answer (4) + a beat to spare
PROBES = 200


def keys_for(period: int) -> list[str]:
    p = f"midi.p{period}"
    return [f"{p}.grid_error_p50_ms", f"{p}.grid_error_p99_ms", f"{p}.calibrated_latency_ms",
            f"{p}.grid_error_calibrated_p50_ms", f"{p}.grid_error_calibrated_p99_ms"]


def run(report: Report, server, model: Path, options, period: int, work_dir: Path, costs, tpb: int) -> None:
    """Calibrate on this server, then one clock-following stream without and one with the setting."""
    p = f"midi.p{period}"
    where = f"{period} frames: answers vs the clock sender's grid"
    latency_ms = calibrate(server)
    report.put(f"{p}.calibrated_latency_ms", latency_ms, f"{period} frames: improv calibrate --loopback "
               "(twice its loopback's median: the clock in, the notes out)", "ms", why="improv calibrate failed")
    for suffix, extra in (("", ()), ("_calibrated", ("--latency-ms", f"{latency_ms:g}"))):
        if suffix and latency_ms is None:
            report.missing([f"{p}.grid_error{suffix}_p50_ms", f"{p}.grid_error{suffix}_p99_ms"],
                           "improv calibrate failed")
            continue
        errors, sender_late_s = clock_stream(server, model, options, work_dir, costs, tpb, extra)
        label = f"{where}{', --latency-ms ' + extra[1] if extra else ''}"
        ms = np.asarray(errors) * 1000.0
        why = "improv played no answer while following the clock"
        report.put(f"{p}.grid_error{suffix}_p50_ms", float(np.median(ms)) if len(ms) else None,
                   f"{label} p50 (signed)", "ms", why=why)
        report.put(f"{p}.grid_error{suffix}_p99_ms", float(np.percentile(np.abs(ms), 99)) if len(ms) else None,
                   f"{label} p99 of |error|", "ms", why=why)
        report.put(f"{p}.clock_sender_late{suffix}_p50_ms", float(np.median(sender_late_s)) * 1000.0,
                   f"{period} frames: the clock sender's own ticks after their deadlines (p50; ~0: it "
                   "writes each at its frame, as a DAW does)", "ms")


def calibrate(server) -> float | None:
    """`improv calibrate --backend jack --loopback` on the server, as a user runs it: the setting."""
    result = subprocess.run([sys.executable, "-m", "improv.cli", "calibrate", "--backend", "jack", "--loopback",
                             "--probes", str(PROBES)], env=server.env, capture_output=True, text=True, timeout=120)
    found = re.search(r"set time\.latency_ms = (-?[\d.]+)", result.stdout)
    return float(found.group(1)) if result.returncode == 0 and found else None


def clock_stream(server, model: Path, options, work_dir: Path, costs, tpb: int,
                 extra: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """Signed errors (s) of every answer note-on against the clock sender's grid, and how late
    (s) the sender's own ticks left after their deadlines."""
    from benchmarks.midi import match_arrivals, note_ons_sent, start_daemon

    log_path = work_dir / f"timing-clock{'-'.join(extra)}.csv"
    daemon = start_daemon(server, model, work_dir, costs, log_path,
                          "--mode", "call", "--clock", "midi", "--bpm", f"{options.bpm:g}",
                          "--seed", str(options.seed + 3), *extra, *options.daemon_args)
    try:
        with timed_clients(server) as (player, recorder):
            source = ClockSource(player, options.bpm)
            source.start()
            try:
                time.sleep(LOCK_S)
                play_calls_on_clock(player, source, options.bpm, options.grid_seconds or options.seconds)
                time.sleep(0.3)
            finally:
                source.stop()
            received = list(recorder.received)
    finally:
        daemon.stop()
    lead_s = float(extra[1]) / 1000 if extra else 0.0
    sent = note_ons_sent(log_path, ("response",))
    meant = [planned_s + lead_s for (planned_s, _, _), t in zip(sent, match_arrivals(sent, received)) if t is not None]
    arrived = [t for t in match_arrivals(sent, received) if t is not None]
    late = [t - d for t, d in zip(source.ticks, source.deadlines)]
    return grid_errors(arrived, meant, source.deadlines[0], 60.0 / options.bpm / tpb), late


@contextlib.contextmanager
def timed_clients(server) -> Iterator[tuple[FramePlayer, Recorder]]:
    """A frame-accurate player wired to improv's input, a recorder to its output."""
    tag = uuid.uuid4().hex[:4]
    with contextlib.ExitStack() as opened:
        player = FramePlayer(f"bench-clock-{tag}")
        opened.callback(player.close)
        recorder = Recorder(f"bench-rec-{tag}")
        opened.callback(recorder.close)
        server.connect(player.port, server.wait_port(":improv in"))
        server.connect(server.wait_port(":improv out"), recorder.port)
        yield player, recorder


def play_calls_on_clock(player, source: ClockSource, bpm: float, seconds: float) -> int:
    """4-beat calls (8 eighth notes) starting on the clock's beats, each answered before the next."""
    spb = 60.0 / bpm
    end, calls = time.perf_counter() + seconds, 0
    pitches = [60, 62, 64, 65, 67, 65, 64, 62]
    while True:
        origin = source.deadlines[0]
        start = origin + np.ceil((time.perf_counter() + 0.2 - origin) / spb) * spb
        if calls and start + CALL_BEATS * spb > end:
            return calls
        phrase = sorted([(i * 0.5 * spb, [0x90, p, 90]) for i, p in enumerate(pitches)]
                        + [((i * 0.5 + 0.4) * spb, [0x80, p, 0]) for i, p in enumerate(pitches)])
        player.play(phrase, float(start))
        sleep_until(float(start) + CALL_BEATS * spb)
        calls += 1


def grid_errors(arrivals_s: list[float], meant_s: list[float], origin_s: float, step_s: float) -> list[float]:
    """Each arrival - the point of the grid origin_s + k * step_s nearest the time it was meant
    for (signed seconds)."""
    return [t - (origin_s + round((m - origin_s) / step_s) * step_s) for t, m in zip(arrivals_s, meant_s)]


def ticks_per_beat(model: Path) -> int:
    """The model's token grid: ticks per beat (its vocabulary's config)."""
    from improv.tokens import Vocabulary

    meta = json.loads((Path(model) / "model.json").read_text())
    return int(Vocabulary.from_dict(meta["vocabulary"]).config.ticks_per_beat)
