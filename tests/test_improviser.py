"""The improviser through the engine on a ManualClock: phrase ends, grid placement, lengths,
interruption, overlap, CCs, key lock, the listening context, duet, MIDI clock, and no stuck notes.

At 120 bpm one beat is 0.5 s; the beat clock starts at t = 0 (beat 0)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improv.clock import PPQN, ManualClock
from improv.engine import Engine
from improv.errors import ModelError
from improv.events import ClockTick, Control, NoteOff, NoteOn, Start, Stop
from improv.keys import parse_key
from improv.context import ModelContext, TimedModel
from improv.settings import load_settings
from tests.fakes import BrokenModel, FakeMidiOut, FakeModel

SPB = 0.5  # seconds per beat at 120 bpm
C_MAJOR_CALL = (60, 62, 64, 65, 67, 65, 64, 62)


def make(overrides=None, model=None, seed=3):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": seed, **(overrides or {})})
    return Engine(model or FakeModel(), s, clock, port), port, clock


def call(pitches=(60, 62, 64, 65), start_beats=2.0, length=0.9, velocity=90, channel=0, step=1.0):
    """One note per `step` beats from `start_beats`, each held `length` beats."""
    events = []
    for i, p in enumerate(pitches):
        t = (start_beats + i * step) * SPB
        events += [NoteOn(t, channel, p, velocity), NoteOff(t + length * SPB, channel, p)]
    return events


def ons(port, after=-1.0):
    return [(t, m) for t, m in port.note_ons() if t > after]


def test_phrase_ends_after_silence_and_the_answer_starts_on_the_next_beat():
    engine, port, clock = make()
    engine.run_until(3.4, call())  # last release at beat 5.9, phrase end at 6.9
    assert ons(port) == []
    assert engine.improviser.state == "waiting"
    pending = engine.improviser.call.pending
    assert pending is not None and pending.buffer, "the answer is prepared during the silence"
    engine.run_until(3.6)
    assert engine.improviser.state == "responding"
    first_t, _ = ons(port)[0]
    assert first_t == pytest.approx(7 * SPB, abs=1e-9)  # beat 7, exactly
    assert engine.scheduler.records[0][0] == pytest.approx(7 * SPB, abs=1e-9)


def test_longer_silence_setting():
    engine, port, _ = make({"mode.silence_beats": 2.0})
    engine.run_until(3.99, call())
    assert ons(port) == []
    engine.run_until(4.5)
    assert ons(port)[0][0] == pytest.approx(8 * SPB)  # 5.9 + 2 = 7.9 -> beat 8


@pytest.mark.parametrize("anchor, first_s", [("call", 5.0), ("clock", 4.0)])
def test_bar_grid(anchor, first_s):
    engine, port, _ = make({"mode.response_start": "bar", "time.grid_anchor": anchor})
    engine.run_until(6.0, call())  # the call starts at 1.0 s (beat 2); phrase end at 3.45 s
    # the next bar counted from the call's first note (1, 3, 5 s), or from the clock's start (0, 2, 4 s)
    assert ons(port)[0][0] == pytest.approx(first_s)


def test_a_held_key_prevents_the_phrase_end():
    engine, port, _ = make()
    held = [NoteOn(2 * SPB, 0, 48, 80), NoteOff(10 * SPB, 0, 48)]
    engine.run_until(5.4, call() + held)  # short notes end at 5.9, the held one at 10
    assert ons(port) == []
    engine.run_until(6.0)
    assert ons(port)[0][0] == pytest.approx(11 * SPB)


def test_end_cc_ends_the_phrase_at_once_even_with_a_key_held():
    engine, port, _ = make({"mode.end_cc": 85})
    events = [NoteOn(2 * SPB, 0, 60, 90), Control(4.3 * SPB, 0, 85, 127), NoteOff(12 * SPB, 0, 60)]
    engine.run_until(2.6, events)
    assert ons(port)[0][0] == pytest.approx(5 * SPB)  # next beat after the CC
    engine.run_until(20.0)
    assert engine.improviser.responses == 1  # releasing that key later ends no new phrase


@pytest.mark.parametrize("length, end_beats", [("call", 11.0), ("6 beats", 13.0), ("2 bars", 15.0)])
def test_response_length(length, end_beats):
    engine, port, _ = make({"mode.response_length": length})
    engine.run_until(12.0, call())  # call: beat 2 to 5.9 -> 4 beats; answer from beat 7
    answer, to_s = engine.improviser.last_response, engine.beat_clock.time_at  # (beats move with the grid)
    assert answer and to_s(min(n.onset_beats for n in answer)) == pytest.approx(7.0 * SPB)
    assert to_s(max(n.onset_beats + n.duration_beats for n in answer)) <= end_beats * SPB + 1e-9
    assert max(t for t, m in port.sent if m.type == "note_off") <= end_beats * SPB + 1e-9
    assert port.sounding() == set()


def test_the_answer_uses_the_calls_velocity():
    engine, port, _ = make()
    engine.run_until(8.0, call(velocity=70))
    assert {m.velocity for _, m in ons(port)} == {70}


def test_a_player_note_interrupts_the_answer():
    engine, port, _ = make()
    engine.run_until(3.51, call())
    assert port.sounding(), "the answer's first note sounds"
    engine.run_until(3.6, [NoteOn(3.55, 0, 72, 90), NoteOff(3.7, 0, 72)])
    assert port.sounding() == set()
    assert engine.improviser.state == "listening"
    assert [t for t, m in port.sent if m.type == "note_off" and t > 3.5] == [3.55] * len(
        [m for t, m in port.sent if m.type == "note_off" and t > 3.5])
    engine.run_until(4.49)  # the interrupting note (beat 7.1 to 7.4) is a new call: answered at beat 9
    assert ons(port, after=3.55) == []
    engine.run_until(6.0)
    assert ons(port, after=3.55)[0][0] == pytest.approx(9 * SPB)


def test_with_overlap_the_answer_plays_on():
    plain, plain_port, _ = make()
    plain.run_until(6.0, call())
    engine, port, _ = make({"mode.overlap": True})
    engine.run_until(6.0, call() + [NoteOn(3.55, 0, 72, 90), NoteOff(3.6, 0, 72)])
    first = [(t, m.note) for t, m in ons(port) if t < 5.5]
    assert first == [(t, m.note) for t, m in ons(plain_port) if t < 5.5]
    assert engine.improviser.responses == 2  # the note was a new call: answered after this answer
    assert ons(port, after=5.49)[0][0] == pytest.approx(11 * SPB)


def test_mode_switch_by_cc_releases_what_sounds():
    engine, port, _ = make()
    engine.run_until(3.51, call())
    before = port.sounding()
    assert before
    engine.run_until(3.52, [Control(3.52, 0, 22, 127)])
    released = {(m.channel, m.note) for t, m in port.sent if m.type == "note_off" and t == 3.52}
    assert before <= released
    assert engine.improviser.mode == "duet" and engine.improviser.state == "duet"
    engine.run_until(5.0, call(C_MAJOR_CALL, start_beats=7.1, step=0.25, length=0.2))
    assert ons(port, after=3.52), "the duet plays along"
    engine.run_until(5.01, [Control(5.01, 0, 22, 0)])
    assert port.sounding() == set()
    assert engine.improviser.mode == "call"


def test_cc_mappings():
    engine, _, _ = make()
    imp = engine.improviser
    engine.run_until(0.1, [Control(0.01, 0, 21, 127), Control(0.02, 0, 23, 127)])
    assert imp.sampler.temperature == pytest.approx(2.0) and imp.settings.sampling.temperature == 2.0
    assert imp.settings.mode.response_length == "8 bars"
    engine.run_until(0.2, [Control(0.15, 0, 21, 0), Control(0.16, 0, 23, 0)])
    assert imp.sampler.temperature == pytest.approx(0.1)
    assert imp.settings.mode.response_length == "call"


def test_unmapped_cc_and_other_channels_are_ignored():
    engine, port, _ = make({"output.input_channel": 2})
    engine.run_until(8.0, call(channel=0) + [Control(0.1, 1, 21, 127)])
    assert ons(port) == [] and engine.improviser.sampler.temperature == pytest.approx(2.0)
    engine.run_until(16.0, call(start_beats=10.0, channel=1))
    assert ons(port)


def test_thru_echoes_the_player_on_the_output_channel():
    engine, port, _ = make({"output.thru": True, "output.channel": 3})
    engine.run_until(3.0, call())
    assert [(t, m.note, m.channel) for t, m in ons(port)] == [
        (pytest.approx((2 + i) * SPB), p, 2) for i, p in enumerate((60, 62, 64, 65))]
    assert port.sounding() == set()



@pytest.mark.parametrize("mode", ["duet", "call"])
def test_the_thru_echo_reaches_the_scheduler_before_the_event_is_worked_on(mode):
    """The echo needs no decision: it is handed over before `on_event` (a duet re-plan, the
    context) and before the reaction's model steps, so neither delays it."""
    engine, port, _ = make({"output.thru": True, "mode.mode": mode})
    handed: list[tuple[str, int]] = []  # (kind, pitch) of thru plans, in hand-over order
    seen_at_event: list[list[tuple[str, int]]] = []
    add, on_event = engine.scheduler.add, engine.improviser.on_event

    def record_add(plans):
        plans = list(plans)
        handed.extend((p.kind, p.pitch) for p in plans if p.source == "thru")
        add(plans)

    def record_event(event):
        if isinstance(event, NoteOn):
            seen_at_event.append(list(handed))
        return on_event(event)

    engine.scheduler.add, engine.improviser.on_event = record_add, record_event
    notes = call((60, 62, 64, 65, 67, 69))
    engine.run_until(12.0, notes)
    strikes = [e.pitch for e in notes if isinstance(e, NoteOn)]
    assert len(seen_at_event) == len(strikes)
    for i, pitch in enumerate(strikes):
        assert seen_at_event[i][-1] == ("on", pitch), (i, seen_at_event[i][-3:])
    assert [m.note for _, m in port.note_ons() if m.channel == 0][:1] == [60]  # the echo was sent


C_ARPEGGIO = (60, 64, 67, 72, 71, 67, 65, 64, 62, 60)


@pytest.mark.parametrize("key", ["D major", "auto"])
def test_key_lock(key):
    engine, port, _ = make({"sampling.key": key, "mode.response_length": "8 bars"})
    engine.run_until(30.0, call(C_ARPEGGIO))
    assert engine.improviser.key.name == ("C major" if key == "auto" else "D major")
    expected = engine.improviser.key.pitch_classes
    pitches = [m.note for _, m in ons(port)]
    assert len(pitches) > 10
    assert {p % 12 for p in pitches} <= expected


def test_without_key_lock_the_fake_model_leaves_the_key():
    engine, port, _ = make({"sampling.key": "off", "mode.response_length": "8 bars", "listen.memory": False})
    engine.run_until(30.0, call(C_ARPEGGIO))
    assert {m.note % 12 for _, m in ons(port)} - parse_key("C").pitch_classes  # the test above means something


def test_pitch_range_and_polyphony():
    engine, port, _ = make({"sampling.pitch_lo": 60, "sampling.pitch_hi": 72, "sampling.max_polyphony": 2,
                            "sampling.key": "off", "mode.response_length": "8 bars"})
    engine.run_until(30.0, call())
    sounding, most = set(), 0
    for _, m in port.sent:
        if m.type == "note_on":
            assert 60 <= m.note <= 72
            sounding.add(m.note)
        elif m.type == "note_off":
            sounding.discard(m.note)
        most = max(most, len(sounding))
    assert most <= 2


def test_listening_is_never_disturbed_by_a_discarded_answer():
    model = FakeModel()
    engine, port, _ = make(model=model)
    events = call() + call((67, 69), start_beats=6.5)  # plays again during the silence
    engine.run_until(3.3, events)
    assert ons(port) == []
    reference = ModelContext(TimedModel(FakeModel()))
    beats = engine.beat_clock.beats_at
    for ev in [e for e in events if e.t_s <= 3.3]:
        if isinstance(ev, NoteOn):
            reference.note_on(beats(ev.t_s), ev.pitch, ev.velocity)
        else:
            reference.note_off(beats(ev.t_s), ev.pitch)
    reference.catch_up(1000)
    ctx = engine.improviser.context
    assert ctx.ready and ctx.state == reference.state  # one cached step per token, nothing else
    assert (ctx.logits == reference.logits).all()


def test_the_context_hears_the_answer_too():
    engine, port, _ = make()
    engine.run_until(3.4, call())
    before = engine.improviser.context.state.position
    engine.run_until(12.0)
    notes = len(ons(port))
    assert notes > 0
    assert engine.improviser.context.state.position >= before + 2 * notes


def test_duet_plays_along_in_time_and_replans():
    engine, port, _ = make({"mode.mode": "duet"})
    assert engine.improviser.state == "duet"
    engine.run_until(4.0, call(C_MAJOR_CALL, step=0.5, length=0.4))
    duet = ons(port)
    assert duet and all(t >= 1.0 for t, _ in duet)  # starts with the player
    assert engine.scheduler.dropped == 0
    assert all(r.actual_s == pytest.approx(r.planned_s) for r in engine.scheduler.records)
    engine.run_until(60.0)  # the player stopped: improv plays on a while, then stops
    assert port.sounding() == set()
    assert engine.next_wakeup_s() is None


def test_shutdown_releases_everything_mid_answer():
    engine, port, _ = make({"output.thru": True})
    engine.run_until(3.6, call() + [NoteOn(3.56, 0, 50, 80)])
    engine.shutdown()
    assert port.sounding() == set()
    assert any(m.type == "control_change" and m.control == 123 for m in port.messages)


def test_a_model_error_releases_every_note():
    engine, port, _ = make(model=BrokenModel(ok_steps=60))
    with pytest.raises(ModelError, match="model failed"):
        engine.run_until(12.0, call())
    assert port.sounding() == set()


def test_answers_land_on_the_midi_clock_grid():
    engine, port, clock = make({"time.clock": "midi", "time.bpm": 90.0})
    period = 60.0 / (100.0 * PPQN)  # the external clock runs at 100 bpm from t = 0.3 s
    ticks = [Start(0.29)] + [ClockTick(0.3 + i * period) for i in range(20 * PPQN)]
    spb = 0.6
    notes = [e for p_i, p in enumerate((60, 62, 64, 65))
             for e in (NoteOn(0.3 + (2 + p_i) * spb, 0, p, 90), NoteOff(0.3 + (2.9 + p_i) * spb, 0, p))]
    engine.run_until(0.3 + 8 * spb, ticks + notes)
    assert engine.beat_clock.bpm == pytest.approx(100.0, rel=1e-3)
    first = ons(port)[0][0]
    assert first == pytest.approx(0.3 + 7 * spb, abs=1e-6)  # beat 7 of the external clock


_player = st.lists(st.tuples(st.floats(0.0, 1.5), st.integers(58, 64), st.floats(0.0, 2.0),
                             st.sampled_from(["note", "note", "note", "mode", "end", "panic", "length"])),
                   min_size=1, max_size=16)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_player, st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["beat", "bar"]))
def test_no_stuck_notes_under_any_playing(moves, duet, overlap, thru, grid):
    engine, port, clock = make({"mode.mode": "duet" if duet else "call", "mode.overlap": overlap,
                                "output.thru": thru, "mode.end_cc": 85, "mode.max_response_beats": 8.0,
                                "mode.response_start": grid})
    t, events = 0.0, []
    for gap, pitch, length, kind in moves:
        t += gap
        if kind == "note":
            events += [NoteOn(t, 0, pitch, 90), NoteOff(t + length, 0, pitch)]
        elif kind == "mode":
            events.append(Control(t, 0, 22, 127 if pitch % 2 else 0))
        elif kind == "end":
            events.append(Control(t, 0, 85, 127))
        elif kind == "length":
            events.append(Control(t, 0, 23, (pitch - 58) * 20))
        else:
            events.append(Control(t, 0, 123, 0))
    end = max(e.t_s for e in events)
    engine.run_until(end + 40.0, events)  # long after the player stopped: silence
    assert port.sounding() == set()
    assert engine.next_wakeup_s() is None
    sounding: set[tuple[int, int]] = set()
    for _, m in port.sent:
        if m.type == "note_on":
            assert (m.channel, m.note) not in sounding
            sounding.add((m.channel, m.note))
        elif m.type == "note_off":
            assert (m.channel, m.note) in sounding
            sounding.discard((m.channel, m.note))
    engine.shutdown()
    assert port.sounding() == set()


@pytest.mark.parametrize("kind", ["lstm", "wavenet"])
def test_with_real_step_models(kind, tiny_model_dir, tiny_wavenet_dir):
    from improv.model_step import StepModel

    model = StepModel.load(tiny_model_dir if kind == "lstm" else tiny_wavenet_dir)
    engine, port, _ = make(model=model)
    engine.run_until(20.0, call(C_ARPEGGIO))
    assert ons(port) and ons(port)[0][0] == pytest.approx(13 * SPB)  # last release 11.9 -> beat 13
    assert port.sounding() == set()
    assert engine.stats().step_ms_p50 is not None


def test_metronome_clicks_every_beat_with_the_bar_accented():
    engine, port, _ = make({"time.metronome": True, "time.metronome_channel": 10})
    engine.run_until(4.2)
    clicks = [(t, m.note, m.channel) for t, m in ons(port)]
    assert [t for t, _, _ in clicks] == pytest.approx([i * SPB for i in range(9)])
    assert [n for _, n, _ in clicks] == [76, 77, 77, 77, 76, 77, 77, 77, 76]
    assert {ch for _, _, ch in clicks} == {9}
    engine.shutdown()
    assert port.sounding() == set()


def test_send_clock_at_absolute_deadlines_with_start_and_stop():
    engine, port, _ = make({"time.send_clock": True})
    engine.run_until(2.0)
    clock_times = [t for t, m in port.sent if m.type == "clock"]
    period = SPB / PPQN
    assert port.messages[0].type == "start"
    assert len(clock_times) == int(2.0 / period) + 1
    assert all(abs(t - i * period) < 1e-9 for i, t in enumerate(clock_times))
    engine.shutdown()
    assert any(m.type == "stop" for m in port.messages)


def test_midi_stop_releases_improvs_notes():
    engine, port, _ = make({"time.clock": "midi", "time.bpm": 120.0})
    period = SPB / PPQN
    ticks = [Start(0.0)] + [ClockTick(0.001 + i * period) for i in range(8 * PPQN)]
    engine.run_until(3.51, ticks + call())
    assert port.sounding()
    engine.run_until(3.52, [Stop(3.52)])
    assert port.sounding() == set()
    assert not engine.beat_clock.running


def test_real_time_with_threads_answers_on_the_grid():
    """The daemon's shape on the real clock: an engine loop + the scheduler thread (generous bounds)."""
    import threading

    from improv.clock import MonotonicClock

    clock = MonotonicClock()
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 240.0, "sampling.seed": 1, "mode.response_length": "4 beats"})
    engine = Engine(FakeModel(), s, clock, port)
    origin = engine.beat_clock.time_at(0.0)
    spb = 0.25
    events = [e for i, p in enumerate((60, 62, 64, 65))
              for e in (NoteOn(origin + (2 + i) * spb, 0, p, 90), NoteOff(origin + (2.8 + i) * spb, 0, p))]
    engine.start()
    try:
        end = origin + 12 * spb
        while clock.now() < end:
            while events and events[0].t_s <= clock.now():
                engine.feed(events.pop(0))
            engine.tick()
            wake = engine.next_wakeup_s()
            nxt = min(wake if wake is not None else end, events[0].t_s if events else end, end)
            threading.Event().wait(max(0.0, min(0.01, nxt - clock.now())))
    finally:
        engine.shutdown()
    answer = [t for t, m in port.note_ons() if t > origin + 6 * spb]
    assert answer, "improv answered"
    grid = origin + 7 * spb  # last release at beat 5.8, silence 1 beat -> beat 7
    assert 0.0 <= answer[0] - grid < 0.05
    assert port.sounding() == set()


def test_an_answer_woken_too_late_moves_to_the_next_grid_point_instead_of_starting_late():
    engine, port, clock = make()
    engine.run_until(3.3, call())  # prepared; phrase end at 3.45, grid point 3.5
    clock.set(3.52)  # the engine thread was held up past the grid point
    engine.tick(3.52)
    engine.run_until(4.5)
    assert ons(port)[0][0] == pytest.approx(8 * SPB)  # beat 8, not 20 ms late at beat 7
    assert all(r.actual_s == pytest.approx(r.planned_s) for r in engine.scheduler.records)
