"""End to end over real MIDI ports: `improv run` on a private JACK server (dummy driver) per period.

A player and a recorder (benchmarks.harness.clients: sleep-only, stamped with time.perf_counter,
the daemon's clock too; CLOCK_MONOTONIC is shared between processes) live in this process. Per period:

* duet: the player plays single notes below improv's pitch range at random times (gaps uniform in
  0.25-0.6 s). Reaction = send time -> arrival of the first note-on improv sent of its own after
  it (the daemon's --timing-log says what it sent and when), if improv sent one before the
  player's next note (else "unanswered"). A note-on it sent that never arrived within
  MATCH_WINDOW_S is counted as lost in JACK, never replaced by a later note. Without the log: the
  next own note-on that arrived. The daemon runs with --thru, so the echo of each note (same
  pitch) gives the I/O path alone, and its log entry says improv heard the note and when it
  stamped it: a note with no echo never reached improv (counted, not timed), and "inside"
  = improv's stamp -> the send of its reaction (or echo), improv's own share of the figure.
* call and response: 4-beat calls on improv's beat grid (from the ready file) until the stream
  time is used up, each answered before the next. Error = arrival of each answer note-on - its
  planned time. The plan comes from the daemon's timing log (CSV) when `improv run` has --timing-log
  (a note-on logged as sent but not received within MATCH_WINDOW_S is counted as lost),
  else from the grid: answers start on a beat and move in whole ticks (1/ticks_per_beat of a
  beat), so the plan is the last tick at or before the arrival (exact up to one tick, 41.7 ms at
  120 bpm/12 ticks; a later note would alias). Dropped note-ons: counted from the daemon's
  "dropped a ... note-on" warnings (a dropped note is never sent, so it is not in the log).
  Late: arriving more than 1 ms after the plan.
* following MIDI clock (the last period only): `benchmarks.midi_grid`.
With `--repeat N` each stream is played N times: every figure the median of the runs' (`Report.merge_runs`).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import midi_grid
from benchmarks.daemon import Costs, CpuWindow, measure_idle, measure_memory
from benchmarks.harness import jackd
from benchmarks.harness.clients import Player, Recorder, sleep_until
from benchmarks.harness.improv_process import DaemonError, ImprovProcess
from benchmarks.harness.notes import note_ons
from benchmarks.report import Report
from improv.timing_log import read_timing_log

RANGE = (48, 84)  # improv's pitches; the player plays below, so its echoes are told apart
LATE_MS = 1.0
EARLY_S = 50e-6  # float slack when snapping an arrival to its tick
MATCH_WINDOW_S = 0.05  # an arrival belongs to a sent note-on only this soon after it (JACK: a period or two)
CALL_BEATS = 10  # call (4 beats) + silence (1) + answer (4) + a beat to spare
# The bench's jackd manages at most this many ports (`jackd --port-max`; `improv bench
# --jack-port-max`). Every JACK client maps the server's shared port buffers, sized by this
# limit, and they count in its resident memory (`daemon.rss_shmem_mb`): with jackd2's default
# limit, as the bench ran before, improv measured 201 MB VmRSS, 107 MB of it JACK's (with
# --jack-port-max 2048: 200 / 107 MB); at 256, 140 MB, 47 MB of it.
PORT_MAX = 256


@dataclass(frozen=True)
class MidiOptions:
    seconds: float = 60.0  # each stream (duet, call and response), per period
    periods: tuple[int, ...] = (32, 64)
    rate_hz: int = 48000
    bpm: float = 120.0
    idle_s: float = 10.0
    seed: int = 0
    port_max: int = PORT_MAX
    realtime: bool = False  # jackd --realtime (SCHED_FIFO, where allowed); off: as CI machines allow
    repeat: int = 1  # each stream this many times: medians of the per-run figures, and their spread
    grid_seconds: float | None = None  # the clock-following streams (benchmarks.midi_grid); None: `seconds`
    daemon_args: tuple[str, ...] = ()  # more `improv run` options for every stream (--realtime)


def keys_for(period: int, grid: bool = False) -> list[str]:
    return [f"midi.p{period}.{k}" for k in ("reaction_p50_ms", "reaction_p99_ms", "thru_p50_ms", "thru_p99_ms",
                                            "reaction_inside_p50_ms", "reaction_inside_p99_ms",
                                            "thru_inside_p50_ms", "thru_inside_p99_ms",
                                            "plan_error_p50_ms", "plan_error_p99_ms", "plan_error_max_ms")
            ] + (midi_grid.keys_for(period) if grid else [])


def labels_for(period: int, rate_hz: int) -> dict[str, tuple[str, str]]:
    where = f"{period} frames ({1000 * period / rate_hz:.3f} ms)"
    return {f"midi.p{period}.reaction_p99_ms": (f"{where}: duet note in -> improv's next note out p99", "ms"),
            f"midi.p{period}.plan_error_p99_ms": (f"{where}: call-and-response arrival - plan p99", "ms")}


def run(report: Report, model: Path, options: MidiOptions, work_dir: Path, costs: Costs) -> None:
    """Both streams at every period; a period that fails writes nulls with the reason."""
    tpb = midi_grid.ticks_per_beat(model)
    for period in options.periods:
        last = period == options.periods[-1]  # the daemon's cost, and following MIDI clock
        try:
            with jack_server(period, options.rate_hz, work_dir, realtime=options.realtime,
                             port_max=options.port_max) as server:
                runs = [report] if options.repeat == 1 else [Report() for _ in range(options.repeat)]
                for i, run_report in enumerate(runs):
                    _duet(run_report, server, model, options, period, work_dir, costs)
                    _call(run_report, server, model, options, period, work_dir, costs, tpb, measure_cost=last and i == 0)
                    if last:
                        midi_grid.run(run_report, server, model, options, period, work_dir, costs, tpb)
                if options.repeat > 1:
                    report.merge_runs(runs)
        except (DaemonError, OSError, RuntimeError, AssertionError) as err:
            report.missing(keys_for(period, grid=last), f"period {period}: {err}", labels_for(period, options.rate_hz))
            for part in ("startup", "memory", "idle", "busy"):
                costs.why.setdefault(part, f"the daemon at period {period}: {err}")
    report.note("midi.note", (
        f"improv run --model {model.name}; JACK dummy driver {options.rate_hz} Hz (jackd "
        f"{'--realtime' if options.realtime else '--no-realtime'} --port-max {options.port_max}), periods "
        f"{', '.join(map(str, options.periods))} frames; "
        f"streams of {options.seconds:g} s at {options.bpm:g} bpm. Reaction = player's send -> arrival of improv's "
        "next note-on, stamped in one process: JACK in (next period), improv's callback, engine and re-plan, the "
        "musical wait until that note's planned time, scheduler, JACK out (next period), recorder callback. "
        "Thru = the same path for the echo of the note (no model, no musical wait). Plan error = arrival - "
        "planned time of each answer note-on (includes JACK out and the recorder callback)."))


# ---------------------------------------------------------------------- the JACK server and clients


def jack_server(period: int, rate_hz: int, work_dir: Path, realtime: bool = False,
                port_max: int = PORT_MAX):
    """A private jackd (dummy driver) for the in-process clients and the daemon (a context manager);
    not realtime unless asked; at most `port_max` ports (see PORT_MAX)."""
    return jackd.running("improv-bench", work_dir / f"jackd-p{period}.log", period=period, rate_hz=rate_hz,
                         realtime=realtime, port_max=port_max)


@contextlib.contextmanager
def connected_clients(server):
    tag = uuid.uuid4().hex[:4]
    player, recorder = Player(f"bench-player-{tag}"), Recorder(f"bench-rec-{tag}")
    try:
        server.connect(player.port, server.wait_port(":improv in"))
        server.connect(server.wait_port(":improv out"), recorder.port)
        yield player, recorder
    finally:
        player.close()
        recorder.close()


def start_daemon(server, model: Path, work_dir: Path, costs: Costs, log_path: Path, *args: str) -> ImprovProcess:
    daemon = ImprovProcess.started(model, ["--backend", "jack", "--range", f"{RANGE[0]}-{RANGE[1]}", *args],
                                   server.env, work_dir, timing_log=log_path)
    costs.started(daemon)
    return daemon


# ---------------------------------------------------------------------- duet: reaction


def _duet(report: Report, server, model: Path, options: MidiOptions, period: int, work_dir: Path,
          costs: Costs) -> None:
    daemon = start_daemon(server, model, work_dir, costs, work_dir / f"timing-duet-p{period}.csv", "--mode", "duet",
                     "--thru", "--bpm", f"{options.bpm:g}", "--seed", str(options.seed + 1), *options.daemon_args)
    log_path = daemon.timing_path
    try:
        with connected_clients(server) as (player, recorder):
            sends = _play_duet(player, options.seconds, np.random.default_rng(options.seed))
            time.sleep(0.3)  # the last answers arrive
            received = list(recorder.received)
    finally:
        daemon.stop()
    reaction, thru, unanswered = duet_latencies(sends, received)
    lost = not_heard = None
    if log_path and log_path.exists():  # exact: what improv sent, so a note JACK lost is not mistaken for a slow one
        reaction, unanswered, lost, not_heard = reactions_from_log(sends, log_path, received)
    p = f"midi.p{period}"
    where = labels_for(period, options.rate_hz)
    report.put_quantiles(f"{p}.reaction", reaction, where[f"{p}.reaction_p99_ms"][0].replace(" p99", ""),
                   "improv never played a note of its own between two of the player's")
    report.put(f"{p}.reaction_samples", float(len(reaction)))
    report.put(f"{p}.reaction_unanswered", float(unanswered), f"{period} frames: player notes improv did not answer "
               "before the next one", "")
    report.put(f"{p}.reaction_lost", None if lost is None else float(lost), f"{period} frames: reactions improv "
               "sent that never arrived (lost in JACK)", "", why="needs the daemon's --timing-log")
    report.put(f"{p}.reaction_not_heard", None if not_heard is None else float(not_heard), f"{period} frames: "
               "player notes that never reached improv (lost in JACK; not timed)", "",
               why="needs the daemon's --timing-log")
    report.put_quantiles(f"{p}.thru", thru, f"{period} frames: note in -> its thru echo out",
                   "no thru echo arrived")
    inside, echo_inside = inside_improv(sends, log_path) if log_path and log_path.exists() else ([], [])
    why = "needs the daemon's --timing-log" if not log_path else "the timing log has no reaction to a stamped note"
    report.put_quantiles(f"{p}.reaction_inside", inside, f"{period} frames: inside improv, the player's note "
                   "stamped -> its reaction sent", why)
    report.put_quantiles(f"{p}.thru_inside", echo_inside, f"{period} frames: inside improv, the player's note "
                   "stamped -> its thru echo sent", why)


def _play_duet(player, seconds: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    sends, t = [], time.perf_counter() + 0.3
    end = t + seconds
    while t < end:
        pitch = int(rng.integers(RANGE[0] - 12, RANGE[0]))
        sleep_until(t)
        sends.append((player.send([0x90, pitch, 90]), pitch))
        sleep_until(t + 0.1)
        player.send([0x80, pitch, 0])
        t += float(rng.uniform(0.25, 0.6))
    return sends


def duet_latencies(sends: list[tuple[float, int]], received: list) -> tuple[list[float], list[float], int]:
    """(reaction s, thru s, unanswered count) from the player's (send time, pitch) and arrivals."""
    ons = [(t, m[1]) for t, m in note_ons(received)]
    own = [t for t, pitch in ons if RANGE[0] <= pitch <= RANGE[1]]
    reaction, thru, unanswered = [], [], 0
    for i, (t_send, pitch) in enumerate(sends):
        t_next = sends[i + 1][0] if i + 1 < len(sends) else math.inf
        j = bisect.bisect_right(own, t_send)
        if j < len(own) and own[j] < t_next:
            reaction.append(own[j] - t_send)
        else:
            unanswered += 1
        echo = next((t for t, p in ons if p == pitch and t_send < t < t_next), None)
        if echo is not None:
            thru.append(echo - t_send)
    return reaction, thru, unanswered


# ---------------------------------------------------------------------- call and response: plan error


def _call(report: Report, server, model: Path, options: MidiOptions, period: int, work_dir: Path,
          costs: Costs, tpb: int, measure_cost: bool) -> None:
    daemon = start_daemon(server, model, work_dir, costs, work_dir / f"timing-p{period}.csv", "--mode", "call",
                     "--bpm", f"{options.bpm:g}", "--seed", str(options.seed + 2), *options.daemon_args)
    log_path = daemon.timing_path
    try:
        if measure_cost:
            measure_idle(daemon, costs, options.idle_s)
        with connected_clients(server) as (player, recorder):
            with CpuWindow(daemon) as window:
                _play_calls(player, daemon.info, options.seconds)
            time.sleep(0.3)
            received = list(recorder.received)
        if measure_cost:
            costs.busy_pct, costs.busy_s = window.percent, options.seconds
            measure_memory(daemon, costs)  # after answering
    finally:
        daemon.stop()
    lost = None
    if log_path and log_path.exists():
        errors, lost, source = errors_from_log(log_path, received)
    else:
        errors, source = grid_errors(received, daemon.info, tpb), f"the beat grid ({tpb} ticks per beat)"
    dropped = dropped_from_output(daemon.output())
    p = f"midi.p{period}"
    label = labels_for(period, options.rate_hz)[f"{p}.plan_error_p99_ms"][0].replace(" p99", "")
    why = (f"improv sent {lost} answer note-ons and JACK delivered none of them to the recorder"
           if lost else "improv played no answer note")
    report.put_quantiles(f"{p}.plan_error", errors, label, why, with_max=True)
    report.put(f"{p}.plan_notes", float(len(errors)), f"{period} frames: answer notes measured", "")
    report.put(f"{p}.plan_late", float(sum(e * 1000 > LATE_MS for e in errors)),
               f"{period} frames: late (> {LATE_MS:g} ms after plan)", "")
    report.put(f"{p}.plan_dropped", float(dropped), f"{period} frames: note-ons improv dropped as too late", "")
    report.put(f"{p}.plan_lost", None if lost is None else float(lost),
               f"{period} frames: answer note-ons sent but never received (lost in JACK)", "",
               why="needs the daemon's --timing-log")
    report.note(f"{p}.plan_source", source)


def _play_calls(player, info: dict, seconds: float) -> int:
    """4-beat calls (8 eighth notes) on the daemon's beat grid, each answered before the next."""
    spb, origin = 60.0 / info["bpm"], info["beat_origin_s"]
    end, calls = time.perf_counter() + seconds, 0
    pitches = [60, 62, 64, 65, 67, 65, 64, 62]
    while True:
        k0 = math.ceil((time.perf_counter() + 0.2 - origin) / spb)
        start = origin + k0 * spb
        if calls and start + CALL_BEATS * spb > end:
            return calls
        phrase = sorted([(i * 0.5 * spb, [0x90, p, 90]) for i, p in enumerate(pitches)]
                        + [((i * 0.5 + 0.4) * spb, [0x80, p, 0]) for i, p in enumerate(pitches)])
        player.play(phrase, start)
        sleep_until(start + CALL_BEATS * spb)
        calls += 1


def grid_errors(received: list, info: dict, tpb: int) -> list[float]:
    """Arrival - planned (s) for every note-on, the plan being the last tick at or before it."""
    tick_s = 60.0 / (info["bpm"] * tpb)
    origin = info["beat_origin_s"]
    errors = []
    for t, _ in note_ons(received):
        planned = origin + math.floor((t - origin + EARLY_S) / tick_s) * tick_s
        errors.append(t - planned)
    return errors


def note_ons_sent(path: Path, sources: tuple[str, ...]) -> list[tuple[float, float, int]]:
    """(planned_s, sent_s, pitch) of each note-on of `sources` in the daemon's `--timing-log`,
    in the order planned."""
    return sorted((r.planned_s, r.actual_s, r.pitch) for r in read_timing_log(path)
                  if r.kind == "note_on" and r.source in sources)


def match_arrivals(sent: list[tuple[float, float, int]], received: list) -> list[float | None]:
    """For each sent note-on (planned_s, sent_s, pitch): the arrival of that pitch within
    `MATCH_WINDOW_S` after it was sent (each arrival used once), or None: lost on the way (a
    non-realtime jackd in an xrun drops events). Never a later note of the same pitch."""
    arrivals = sorted((t, m[1]) for t, m in note_ons(received))
    times = [t for t, _ in arrivals]
    used: set[int] = set()
    out: list[float | None] = []
    for _, sent_s, pitch in sent:
        hit = None
        for i in range(bisect.bisect_left(times, sent_s - EARLY_S), len(arrivals)):
            t, p = arrivals[i]
            if t > sent_s + MATCH_WINDOW_S:
                break
            if p == pitch and i not in used:
                hit = i
                break
        if hit is not None:
            used.add(hit)
        out.append(None if hit is None else arrivals[hit][0])
    return out


def errors_from_log(path: Path, received: list) -> tuple[list[float], int, str]:
    """Arrival - planned (s) of each answer note-on the daemon logged, and how many of them never
    arrived (lost in JACK, not late: they are left out of the errors and counted)."""
    sent = note_ons_sent(path, ("response",))
    arrived = match_arrivals(sent, received)
    errors = [t - planned for (planned, _, _), t in zip(sent, arrived) if t is not None]
    return errors, sum(t is None for t in arrived), f"the daemon's timing log ({path.name})"


def reactions_from_log(sends: list[tuple[float, int]], path: Path, received: list) -> tuple[list[float], int, int, int]:
    """Duet reaction per player note: the first note-on improv SENT of its own (the log, sources
    duet and response) after the player's send and before the next one, timed to its arrival.
    Returns (reaction s, unanswered: improv sent nothing in between, lost: sent but never arrived,
    not heard: the note never reached improv). "Not heard" needs the daemon's --thru: a note
    improv received has its echo in the log; one without (JACK dropped it on the way in) is not
    timed, since the next note improv sends then answers nothing."""
    own = note_ons_sent(path, ("duet", "response"))
    arrived = match_arrivals(own, received)
    sent_times = [sent_s for _, sent_s, _ in own]
    echoes = note_ons_sent(path, ("thru",))
    reaction, unanswered, lost, not_heard = [], 0, 0, 0
    for i, (t_send, pitch) in enumerate(sends):
        t_next = sends[i + 1][0] if i + 1 < len(sends) else math.inf
        if echoes and _stamp(echoes, t_send, t_next, pitch) is None:
            not_heard += 1
            continue
        j = bisect.bisect_right(sent_times, t_send)
        if j >= len(own) or sent_times[j] >= t_next:
            unanswered += 1
        elif arrived[j] is None:
            lost += 1
        else:
            reaction.append(arrived[j] - t_send)
    return reaction, unanswered, lost, not_heard


def _stamp(echoes: list[tuple[float, float, int]], t_send: float, t_next: float, pitch: int):
    """The (planned_s = improv's stamp, sent_s, pitch) of the echo of the player's note of `pitch`
    sent at `t_send`, or None if improv echoed no such note before the next one."""
    k = bisect.bisect_left(echoes, (t_send - EARLY_S,))
    while k < len(echoes) and echoes[k][0] < t_next:
        if echoes[k][2] == pitch:
            return echoes[k]
        k += 1
    return None


def inside_improv(sends: list[tuple[float, int]], path: Path) -> tuple[list[float], list[float]]:
    """improv's own share of each duet note (s), from the timing log alone: from improv's stamp of
    the player's note (the planned time of its thru echo, which is the input callback's stamp) to
    the send of (reaction) the first note of its own after it, (thru) the echo. What a reaction
    takes beyond this is JACK's two hops and the clients' wake-ups."""
    echoes = note_ons_sent(path, ("thru",))
    own = note_ons_sent(path, ("duet", "response"))
    own_sent = [sent_s for _, sent_s, _ in own]
    reaction, thru = [], []
    for i, (t_send, pitch) in enumerate(sends):
        t_next = sends[i + 1][0] if i + 1 < len(sends) else math.inf
        echo = _stamp(echoes, t_send, t_next, pitch)
        if echo is None:
            continue  # improv never heard this note: no stamp to measure from
        stamp, echo_sent, _ = echo
        thru.append(echo_sent - stamp)
        j = bisect.bisect_left(own_sent, stamp)
        if j < len(own) and own_sent[j] < t_next:
            reaction.append(own_sent[j] - stamp)
    return reaction, thru


def dropped_from_output(output: str) -> int:
    """Note-ons the daemon's scheduler dropped as too late (it logs each one)."""
    return sum(1 for line in output.splitlines() if "dropped a" in line and "note-on" in line)

