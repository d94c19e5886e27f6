"""improv.clock: manual and beat clocks, the MIDI clock follower, the clock sender."""

from __future__ import annotations

import numpy as np
import pytest

from improv.clock import PPQN, BeatClock, ClockSender, ManualClock, MidiClockFollower, MonotonicClock


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(5.0)
    assert clock.now() == 5.0
    assert clock.advance(0.25) == 5.25
    assert clock.set(7.0) == 7.0
    with pytest.raises(ValueError):
        clock.set(6.0)
    with pytest.raises(ValueError):
        clock.advance(-1.0)


def test_monotonic_clock_is_monotonic():
    clock = MonotonicClock()
    a, b = clock.now(), clock.now()
    assert b >= a


def test_beat_clock_maps_both_ways():
    clock = BeatClock(120.0, origin_s=10.0)
    assert clock.beats_at(10.0) == 0.0
    assert clock.beats_at(11.0) == 2.0
    assert clock.time_at(3.0) == pytest.approx(11.5)
    assert clock.running


def test_tempo_change_keeps_beat_continuity():
    clock = BeatClock(120.0, origin_s=0.0)
    clock.set_bpm(60.0, at_s=2.0)  # beat 4 at 2 s
    assert clock.beats_at(2.0) == pytest.approx(4.0)
    assert clock.beats_at(3.0) == pytest.approx(5.0)
    assert clock.time_at(6.0) == pytest.approx(4.0)


def test_next_grid_time():
    clock = BeatClock(120.0, origin_s=0.0)
    assert clock.next_grid_time(0.6, 1.0) == pytest.approx(1.0)  # beat 1.2 -> beat 2
    assert clock.next_grid_time(1.0, 1.0) == pytest.approx(1.0)  # on the grid: that point
    assert clock.next_grid_time(0.6, 4.0) == pytest.approx(2.0)  # next bar: beat 4


def test_bad_tempo_is_refused():
    with pytest.raises(ValueError):
        BeatClock(0.0)


def _ticks(follower, start_s, bpm, n, jitter_s=0.0, rng=None):
    period = 60.0 / (bpm * PPQN)
    t = start_s
    for _ in range(n):
        noise = rng.uniform(-jitter_s, jitter_s) if rng is not None else 0.0
        follower.on_tick(t + noise)
        t += period
    return t


def test_follower_locks_to_start_and_ticks():
    f = MidiClockFollower(bpm=90.0)
    f.on_tick(0.0)  # clock before Start: ignored
    assert not f.running
    f.on_start(1.0)
    end = _ticks(f, 1.01, 120.0, 48)
    assert f.running
    assert f.bpm == pytest.approx(120.0, rel=1e-6)
    assert f.beats_at(1.01) == pytest.approx(0.0)  # first tick after Start is beat 0
    assert f.beats_at(end) == pytest.approx(2.0)
    assert f.time_at(2.0) == pytest.approx(end)


def test_follower_follows_100_to_140_within_one_beat():
    f = MidiClockFollower(bpm=100.0)
    f.on_start(0.0)
    t = _ticks(f, 0.0, 100.0, 4 * PPQN)
    assert f.bpm == pytest.approx(100.0, rel=1e-3)
    beat_before = f.beats_at(t - 60.0 / (100 * PPQN))
    _ticks(f, t, 140.0, PPQN)  # one beat at the new tempo
    assert f.bpm == pytest.approx(140.0, rel=0.01)
    assert f.beats_at(t) == pytest.approx(beat_before + 1 / PPQN)


def test_follower_is_robust_to_jitter_and_a_late_tick():
    f = MidiClockFollower(bpm=100.0)
    f.on_start(0.0)
    rng = np.random.default_rng(3)
    t = _ticks(f, 0.0, 128.0, 3 * PPQN, jitter_s=0.002, rng=rng)
    assert f.bpm == pytest.approx(128.0, rel=0.02)
    period = 60.0 / (128.0 * PPQN)
    f.on_tick(t + 0.006)  # a USB hiccup: one tick 6 ms late, then on time again
    for k in range(1, 6):
        f.on_tick(t + k * period)
    assert f.bpm == pytest.approx(128.0, rel=0.02)


def test_follower_stop_continue_and_song_position():
    f = MidiClockFollower(bpm=120.0)
    f.on_start(0.0)
    t = _ticks(f, 0.0, 120.0, 2 * PPQN)  # two beats
    f.on_stop(t)
    assert not f.running
    assert f.position_ticks == 2 * PPQN
    stopped_at = f.beats_at(t)
    assert f.beats_at(t + 1.0) == pytest.approx(stopped_at + 2.0)  # free-runs at the last tempo
    f.on_continue(t + 5.0)
    f.on_tick(t + 5.02)
    assert f.running
    assert f.beats_at(t + 5.02) == pytest.approx(2.0)  # resumes where it stopped
    f.on_stop(t + 6.0)
    f.on_song_position(16, t + 6.1)  # 16 sixteenths = beat 4
    f.on_continue(t + 6.2)
    f.on_tick(t + 6.25)
    assert f.beats_at(t + 6.25) == pytest.approx(4.0)
    f.on_start(t + 7.0)
    f.on_tick(t + 7.02)
    assert f.beats_at(t + 7.02) == pytest.approx(0.0)


def test_clock_sender_deadlines_do_not_drift():
    sender = ClockSender(120.0, start_s=100.0)
    ticks = sender.take_until(100.0 + 60.0)  # a minute of clock
    period = 60.0 / (120 * PPQN)
    assert len(ticks) == 120 * PPQN + 1
    assert ticks[-1] == pytest.approx(100.0 + 60.0, abs=1e-9)
    assert all(abs(t - (100.0 + i * period)) < 1e-9 for i, t in enumerate(ticks))
    assert sender.take_until(100.0 + 60.0) == []


def test_clock_sender_tempo_change_has_no_phase_jump():
    sender = ClockSender(120.0, start_s=0.0)
    sender.take_until(1.0)  # ticks 0..48
    next_before = sender.deadline(sender.next_n)
    sender.set_bpm(60.0)
    assert sender.deadline(sender.next_n) == pytest.approx(next_before)
    assert sender.deadline(sender.next_n + 1) - sender.deadline(sender.next_n) == pytest.approx(60.0 / (60 * PPQN))
