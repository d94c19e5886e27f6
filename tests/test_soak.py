"""A one-minute soak over real JACK ports (benchmarks/soak.py; the full run is
`python -m benchmarks.soak --minutes 10`): a player at ~50 note events per second in call and
duet segments against `improv run` with the tiny model, then the same checks as the full run:
no stuck note in what either side sent (what arrives is reported: a non-realtime jackd on a
busy machine loses an event now and then), nothing sounding at improv's recorder once its
shutdown has arrived, no crash, resident memory growth under 5 % after the warm-up,
and the answers' output timing p99 in the last window no worse than in the first (with slack for a
shared machine: at most twice the first plus 1 ms). Both 30 s windows are the same script (20 s of
call and response, 10 s of duet), so the first and the last window measure the same work.

Also here: the duet's lateness after each re-plan (on a slow model), and the verdict
logic of benchmarks/soak.py without JACK."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.soak import SoakOptions, report, run_soak

SOAK_S = 60.0


@pytest.mark.jack
@pytest.mark.timeout(300)
def test_a_one_minute_soak(jack_server, tiny_model_dir, tmp_path):
    opts = SoakOptions(seconds=SOAK_S, rate_hz=50.0, warmup_s=15.0, window_s=30.0, sample_s=1.0, duet_share=1 / 3)
    result = run_soak(jack_server, tiny_model_dir, opts, tmp_path / "soak", progress=lambda s: None)
    text = report(result)
    print("\n" + text)
    assert result.duration_s >= SOAK_S
    assert not result.problems(max_growth_pct=5.0, p99_slack=(2.0, 1.0), min_count=8), text
    assert result.player["rate_while_playing_hz"] >= 40, text
    assert result.improv["responses"] >= 3 and result.improv["duet_played"], text
    assert result.improv["tracebacks"] == 0 and result.improv["dropped_late"] == 0, text


# --------------------------------------------------------------------------- the verdict, without JACK


def _result(**changes):
    from benchmarks.soak import SoakResult

    result = SoakResult(options={}, model="m", duration_s=60.0,
                        player={"stuck_sent": 0, "stuck_received": 3},
                        improv={"stuck_sent": 0, "alive_throughout": True, "exit_code": 0, "errors": 0,
                                "note_ons": 50},
                        rss_mb={"growth_pct": 1.0},
                        timing_ms={"first": {"response": {"count": 40, "p99": 1.0}},
                                   "last": {"response": {"count": 40, "p99": 1.5}}})
    for part, values in changes.items():
        getattr(result, part).update(values)
    return result


@pytest.mark.parametrize("part, values, problem", [
    ("improv", {"stuck_sent": 1}, "improv: 1 stuck notes"),
    ("improv", {"sounding_after_stop": 2}, "2 notes still sounding at its recorder after it stopped"),
    ("player", {"stuck_sent": 2}, "player: 2 stuck notes"),
    ("improv", {"alive_throughout": False}, "crashed"),
    ("improv", {"exit_code": 1}, "exited with 1"),
    ("improv", {"errors": 3}, "3 errors"),
    ("improv", {"note_ons": 0}, "never answered"),
    ("rss_mb", {"growth_pct": 5.0}, "RSS grew 5.0%"),
    ("timing_ms", {"last": {"response": {"count": 40, "p99": 2.1}}}, "p99 2.100 ms in the last window"),
    ("timing_ms", {"last": {"response": {"count": 3, "p99": 0.1}}}, "too few answer notes"),
])
def test_what_fails_a_soak(part, values, problem):
    assert _result().problems() == []  # 3 notes lost on the way to a receiver: reported, not failed
    problems = _result(**{part: values}).problems()
    assert len(problems) == 1 and problem in problems[0], problems


def test_timing_windows_count_scheduled_note_ons_only():
    from benchmarks.harness.notes import sounding_in_log
    from benchmarks.soak import _timing_figures
    from improv.timing_log import TimingRow

    rows = [TimingRow(10.0 + i, 10.0 + i + 0.001 * (i % 3 + 1), "note_on", 0, 60, None, "response")
            for i in range(60)]
    rows.append(TimingRow(20.1, 20.1, "note_on", 0, 62, None, "response"))  # on time at its frame: one
    # releases at the moment they happened (planned = actual): not timing figures
    rows.append(TimingRow(20.2, 20.2, "note_off", 0, 62, None, "response"))  # a cancel's
    rows += [TimingRow(10.5 + i, 10.5 + i + 0.0005, "note_off", 0, 60, None, "response") for i in range(60)]
    rows.append(TimingRow(20.0, 20.0, "note_off", 0, 61, None, "panic"))
    figures = _timing_figures(rows, start=10.0, seconds=60.0, window_s=20.0)
    assert figures["first"]["count"] == 21 and figures["last"]["count"] == 20
    assert figures["first"]["response"]["count"] == 21 and figures["first"]["duet"]["count"] == 0
    assert figures["all"]["max"] == pytest.approx(3.0) and len(figures["answer_p99_by_window"]) == 3
    assert sounding_in_log(rows) == []
    assert len(sounding_in_log(rows[:-2] + rows[-1:])) == 1  # the last note-off missing


# --------------------------------------------------------------------------- the duet's re-plans


SLOW_STEP_S = 0.001


class SlowModel:
    """The fake model at the cost of a slow real one: each step takes at least `step_s` of wall
    time (bach-lstm's p50 here is ~0.25 ms; 1 ms is such a model on a machine four times slower)."""

    def __init__(self, step_s: float) -> None:
        from tests.fakes import FakeModel

        self._model = FakeModel()
        self.step_s = step_s
        self.vocab, self.kind, self.name, self.meta = self._model.vocab, "lstm", "slow", {}

    def new_state(self):
        return self._model.new_state()

    def step(self, token_id, state):
        deadline = time.perf_counter() + self.step_s
        logits = self._model.step(token_id, state)
        time.sleep(max(0.0, deadline - time.perf_counter()))
        return logits


def replan_lateness(step_s: float = SLOW_STEP_S, fixed_guard: bool = False) -> dict:
    """The duet against a slow model on the real clock, in this process: how many re-planned
    notes reached the scheduler, and went out, late; `fixed_guard`: the guard that failed, a
    constant `replan_guard_s`, for comparison. `sleep_p99_ms`: this machine's own timer noise
    in the same run, how late a bare `time.sleep` of 1-5 ms wakes at p99.
    `.venv/bin/python -c "from tests.test_soak import replan_lateness as r; print(r(), r(fixed_guard=True))"`"""
    from improv.clock import MonotonicClock
    from improv.daemon import Daemon
    from improv.engine import Engine
    from improv.midi_in import MidiInput
    from improv.settings import load_settings
    from tests.fakes import FakeMidiOut

    clock = MonotonicClock()
    port = FakeMidiOut(clock)
    settings = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 1, "mode.mode": "duet",
                                    "mode.duet_react": False})
    engine = Engine(SlowModel(step_s), settings, clock, port)
    handed: list[tuple[float, float]] = []  # (when a duet note's plan reached the scheduler, its due time)
    add = engine.scheduler.add

    def add_and_note(plans):
        plans = list(plans)
        now = clock.now()
        handed.extend((now, p.due_s) for p in plans if p.source == "duet" and p.kind in ("on", "off"))
        add(plans)

    engine.scheduler.add = add_and_note
    guard = engine.improviser.duet.guard
    if fixed_guard:
        guard.seconds = lambda: guard.min_s
    daemon = Daemon(engine, MidiInput(None))
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as the daemon runs
    daemon.start()
    try:
        t0 = time.perf_counter() + 0.1
        for k in range(48):  # 16th notes for 6 s
            for offset, data in ((0.0, [0x90, 60 + k % 12, 90]), (0.09, [0x80, 60 + k % 12, 0])):
                deadline = t0 + k * 0.125 + offset
                while (left := deadline - time.perf_counter()) > 0:
                    threading.Event().wait(left)
                daemon.midi_in.put(time.perf_counter(), data)
        time.sleep(0.5)
    finally:
        daemon.stop()
        sys.setswitchinterval(saved)
    sends = [r for r in engine.scheduler.records
             if len(r) > 3 and r[3] == "duet" and r[2].type in ("note_on", "note_off") and r[0] != r[1]]
    late_sends = [r for r in sends if r[1] - r[0] > 0.002]
    late_plans = [due for when, due in handed if when > due + 0.001]
    oversleep = []
    for k in range(200):
        want = 0.001 + 0.004 * (k % 7) / 6
        t = time.perf_counter()
        time.sleep(want)
        oversleep.append(time.perf_counter() - t - want)
    return {"handed": len(handed), "sends": len(sends), "late_plans": len(late_plans),
            "late_sends": len(late_sends), "step_s": guard.step_s, "guard_s": guard.seconds(),
            "min_s": guard.min_s, "worst_send_ms": max((r[1] - r[0] for r in sends), default=0.0) * 1e3,
            "sleep_p99_ms": sorted(oversleep)[int(0.99 * len(oversleep))] * 1e3}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_duet_notes_go_out_on_time_after_each_re_plan():
    """Each player note re-plans the duet's line from a guard ahead of now; the guard must be long
    enough for a slow model to deliver the first new note before it is due
    (`improv.duet.ReplanGuard`). The model takes 1 ms a step, so a guard too short fails by a wide
    margin, far above this machine's own timer noise. Measured here, 2026-12-03 (the command in
    `replan_lateness`, 3 runs each): a fixed 5 ms guard handed 59-67 % of the re-planned notes to
    the scheduler late and 65-72 % went out over 2 ms late; the guard from the window of the last
    re-plans 2-3 % and 3 %, every one of them the duet's first note or first re-plan (the guard
    has timed no step yet; 3.2-3.6 ms late). At 0.25 ms a step (bach-lstm) a fixed guard is late
    1-7 %, near the noise: a CI run failed a 3 % bound on the late sends with the right guard. The
    reaction (due at the player's note by design) is off: its timing has its own test
    (test_engine_timing); the deterministic version, on a manual clock, is in test_duet."""
    # In a process of its own, as `improv run` is: at the end of the suite this test process
    # holds the whole suite's objects and threads' leftovers, and its timing is not the daemon's.
    code = "import json; from tests.test_soak import replan_lateness; print(json.dumps(replan_lateness()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["handed"] > 60 and r["sends"] > 50
    assert r["step_s"] >= SLOW_STEP_S and r["guard_s"] > r["min_s"], "the guard measured the slow model"
    # generous bounds (a shared machine), 4-25 times under what a fixed guard gives
    assert r["late_plans"] <= 0.10 * r["handed"] and r["late_sends"] <= 0.20 * r["sends"], (
        f"{r['late_plans']} of {r['handed']} duet plans reached the scheduler > 1 ms after their due "
        f"time; {r['late_sends']} of {r['sends']} duet notes went out > 2 ms late (worst "
        f"{r['worst_send_ms']:.2f} ms; a bare time.sleep overshot by {r['sleep_p99_ms']:.2f} ms at p99)")
