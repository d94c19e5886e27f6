"""Duet mode's immediate reaction (improv.duet), through the engine on a ManualClock: each player
note-on is answered at its own instant by one note the model picks (range, key, polyphony,
consonant with the keys held) from what it expected before the note, with no model step; the
context hears it, its end comes from the duet's line, and every improv note-on gets exactly one
note-off whatever happens. `duet_react = false` is the old duet; call mode never reacts.

At 120 bpm one beat is 0.5 s; the beat clock starts at t = 0 (beat 0)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from improv.clock import ManualClock
from improv.duet import REACT_VELOCITY_SCALE
from improv.consonance import CONSONANT
from improv.engine import Engine
from improv.errors import ModelError
from improv.events import Control, NoteOff, NoteOn
from improv.keys import parse_key
from improv.settings import load_settings
from tests.fakes import FakeMidiOut, FakeModel

SPB = 0.5


def make(overrides=None, model=None, seed=3):
    clock = ManualClock(0.0)
    port = FakeMidiOut(clock)
    s = load_settings(None, {"time.bpm": 120.0, "sampling.seed": seed, "mode.mode": "duet", **(overrides or {})})
    return Engine(model or FakeModel(), s, clock, port), port, clock


def melody(n=16, t0=1.0, gap=0.37, length=0.2, low=40, velocity=90):
    """Single notes of the player's, below improv's usual range (as `improv bench` plays)."""
    events = []
    for i in range(n):
        t, p = t0 + i * gap, low + (i * 5) % 12
        events += [NoteOn(t, 0, p, velocity), NoteOff(t + length, 0, p)]
    return events


def duet_ons(engine, at=None):
    """The scheduler's records of the duet's note-ons (optionally: planned at `at`)."""
    return [r for r in engine.scheduler.records if r.source == "duet" and r.message.type == "note_on"
            and (at is None or r.planned_s == at)]


def well_paired(port) -> bool:
    """On the wire: no note-on for a sounding note, no note-off for a silent one, nothing left on."""
    sounding = set()
    for _, m in port.sent:
        key = (m.channel, getattr(m, "note", None))
        if m.type == "note_on" and m.velocity > 0:
            assert key not in sounding, f"note-on of a sounding note: {m}"
            sounding.add(key)
        elif m.type in ("note_on", "note_off"):
            assert key in sounding, f"a note-off without its note-on: {m}"
            sounding.discard(key)
    return not sounding


def max_sounding(port, channel=0) -> int:
    sounding, most = set(), 0
    for _, m in port.sent:
        if m.type == "note_on" and m.velocity > 0 and m.channel == channel:
            sounding.add(m.note)
        elif m.type in ("note_on", "note_off") and m.channel == channel:
            sounding.discard(m.note)
        most = max(most, len(sounding))
    return most


# ---------------------------------------------------------------------- what sounds, and when


def test_each_note_on_gets_exactly_one_reaction_due_at_its_own_instant():
    engine, port, _ = make()
    events = melody()
    engine.run_until(40.0, events)
    for ev in [e for e in events if isinstance(e, NoteOn)]:
        (record,) = duet_ons(engine, at=ev.t_s)  # exactly one, planned at the event's time
        assert record.actual_s == ev.t_s  # and sent then: no guard, no wait for a tick
        assert record.message.velocity == round(ev.velocity * REACT_VELOCITY_SCALE)
        assert 36 <= record.message.note <= 96 and record.message.note != ev.pitch
    imp = engine.improviser
    assert imp.duet.reactions == 16 and imp.duet.unanswered == 0
    assert imp.duet.prepared_reactions >= 12  # single notes after a tick: from the prepared table
    assert engine.scheduler.dropped == 0
    assert well_paired(port)


def test_the_reaction_is_sampled_in_feed_with_no_model_step_and_heard_at_the_next_tick():
    model = FakeModel()
    engine, port, _ = make(model=model)
    engine.run_until(2.0, melody(n=3))  # the duet is playing along
    imp, vocab = engine.improviser, model.vocab
    assert imp.context.ready
    steps = model.steps
    engine.feed(NoteOn(2.0, 0, 45, 100))  # no tick: the reaction comes from feed itself
    assert model.steps == steps  # ... and no model step stood between the note and its answer
    (plan,) = [p for *_, p in engine.scheduler._heap if p.source == "duet" and p.kind == "on" and p.due_s == 2.0]
    # the context hears the reaction's ON and the player's, in one onset, at the next tick
    queued = [vocab.name(i) for i, _ in imp.context._queue]
    assert {f"ON_{plan.pitch}", "ON_45"} <= set(queued)
    engine.run_until(2.01)
    fed = [vocab.name(i) for i in model.fed[steps:]]
    assert {f"ON_{plan.pitch}", "ON_45"} <= set(fed) and "BOS" not in fed  # cached steps, no recompute
    assert port.note_ons()[-1][0] >= 2.0 and (0, plan.pitch) in {(m.channel, m.note) for t, m in port.note_ons()}


def settle(engine, t):
    """Tick at `t` until the context has stepped all it heard (a tick steps a few tokens)."""
    engine.tick(t)
    while not engine.improviser.context.ready:
        engine.tick(t)


def _expect(context, vocab, **logits):
    """The context's distribution (the music before the note) set to these logits, -30 elsewhere."""
    context.logits = np.full(len(vocab), -30.0, dtype=np.float32)
    for name, value in logits.items():
        context.logits[vocab.id(name)] = value


@pytest.mark.parametrize("prepared", [True, False])
def test_the_reaction_is_the_models_choice_among_notes_consonant_with_the_keys_held(prepared):
    model = FakeModel()
    engine, _, _ = make({"sampling.key": "off", "sampling.top_k": 0, "sampling.top_p": 1.0,
                         "listen.memory": False}, model=model)  # the model's distribution alone
    engine.run_until(2.0, melody(n=3))
    imp, vocab = engine.improviser, model.vocab

    def strike(t, pitch):
        if prepared:
            settle(engine, t)  # the last tick prepares the table from the distribution just set
            assert imp.duet.reaction.ready
        else:
            imp.duet.reaction.invalidate()  # (as any event since the tick would): chosen at the note
        before = imp.duet.prepared_reactions
        engine.feed(NoteOn(t, 0, pitch, 90))
        assert imp.duet.prepared_reactions == before + prepared
        engine.run_until(t + 0.001)
        (record,) = duet_ons(engine, at=t)
        return record.message.note

    _expect(imp.context, vocab, ON_64=30.0)
    assert strike(2.0, 60) == 64  # a major third over 60: consonant, so the model's 64 it is
    engine.run_until(3.0, [NoteOff(2.2, 0, 60)])
    sounding = {v.pitch for v in imp.duet.part.voices}
    consonant = next(p for p in (69, 72, 62, 57, 77) if p not in sounding)  # a third, fifth... from 65
    _expect(imp.context, vocab, ON_66=30.0, **{f"ON_{consonant}": 20.0})
    assert strike(3.0, 65) == consonant  # 66 against 65 is a second: the next the model expects


def test_a_table_serves_one_note_on_and_only_if_nothing_was_heard_since_the_tick():
    engine, _, _ = make({"sampling.key": "off", "sampling.top_p": 1.0})
    engine.run_until(2.0, melody(n=3, length=1.0))  # the last note (50, at 1.74) is still held
    duet = engine.improviser.duet
    settle(engine, 2.0)
    assert duet.reaction.ready
    prepared, reactions = duet.prepared_reactions, duet.reactions
    engine.feed(NoteOn(2.0, 0, 57, 90))  # from the table (the held key's consonance in it)
    engine.feed(NoteOn(2.0, 0, 54, 90))  # no tick between: the table is spent
    assert (duet.prepared_reactions - prepared, duet.reactions - reactions) == (1, 2)
    settle(engine, 2.1)
    assert duet.reaction.ready
    engine.feed(NoteOff(2.1, 0, 57))  # heard since the tick: the keys held changed
    engine.feed(NoteOn(2.1, 0, 62, 90))
    assert (duet.prepared_reactions - prepared, duet.reactions - reactions) == (1, 3)


def test_reactions_make_consonant_intervals_with_every_key_held():
    engine, port, _ = make({"sampling.key": "off"})
    events = []
    for i in range(16):  # two keys held at once, then a third struck
        t = 1.0 + i * 0.6
        events += [NoteOn(t, 0, 48 + i % 5, 90), NoteOn(t + 0.1, 0, 52 + i % 7, 90), NoteOn(t + 0.2, 0, 43 + i % 3, 90),
                   NoteOff(t + 0.4, 0, 48 + i % 5), NoteOff(t + 0.4, 0, 52 + i % 7), NoteOff(t + 0.4, 0, 43 + i % 3)]
    engine.run_until(20.0, events)
    held: set[int] = set()
    checked = 0
    for ev in sorted(events, key=lambda e: (e.t_s, isinstance(e, NoteOn))):
        if isinstance(ev, NoteOff):
            held.discard(ev.pitch)
            continue
        held.add(ev.pitch)
        (record,) = duet_ons(engine, at=ev.t_s)
        assert all((record.message.note - key) % 12 in CONSONANT for key in held), (ev, held, record.message.note)
        checked += 1
    assert checked == 48


@pytest.mark.parametrize("key", ["D major", "off"])
def test_reactions_keep_range_key_and_polyphony(key):
    engine, port, _ = make({"sampling.pitch_lo": 60, "sampling.pitch_hi": 72, "sampling.key": key,
                            "sampling.max_polyphony": 2})
    events = melody(n=24, gap=0.21, length=0.5)  # overlapping player notes, quick succession
    engine.run_until(40.0, events)
    reactions = [r for ev in events if isinstance(ev, NoteOn) for r in duet_ons(engine, at=ev.t_s)]
    assert len(reactions) == 24
    assert all(60 <= r.message.note <= 72 for r in reactions)
    if key != "off":
        assert {r.message.note % 12 for r in reactions} <= parse_key(key).pitch_classes
    assert max_sounding(port) <= 2
    assert well_paired(port)


def test_at_the_polyphony_limit_an_older_note_lets_go_for_the_reaction():
    engine, port, _ = make({"sampling.max_polyphony": 1, "sampling.key": "off"})
    events = melody(n=20, gap=0.13, length=0.05)
    engine.run_until(40.0, events)
    for ev in [e for e in events if isinstance(e, NoteOn)]:
        assert len(duet_ons(engine, at=ev.t_s)) == 1
    assert max_sounding(port) == 1  # one voice: each reaction replaced what sounded
    assert well_paired(port) and engine.scheduler.holds == {}


def test_a_note_whose_note_off_is_already_with_the_scheduler_can_let_go_too():
    engine, port, _ = make({"sampling.max_polyphony": 1, "sampling.key": "off"})
    engine.run_until(1.0, [NoteOn(0.5, 0, 40, 90)])  # held: the line plays on
    part, t = engine.improviser.duet.part, 1.0
    while not (victims := [v for v in part.voices if v.on_s is not None and v.on_s <= t < (v.off_s or -1.0)]):
        t += 0.005  # until the line's note has its note-off handed over (LOOKAHEAD_S before it)
        engine.run_until(t)
        assert t < 15.0
    (victim,) = victims
    queued_off_s = victim.off_s
    engine.run_until(t, [NoteOn(t, 0, 41, 90)])
    (record,) = duet_ons(engine, at=t)
    assert record.message.note != victim.pitch
    assert [tt for tt, m in port.sent if m.type == "note_off" and m.note == victim.pitch and tt >= victim.on_s][0] == t
    engine.run_until(40.0, [NoteOff(t + 0.5, 0, 41), NoteOff(t + 0.5, 0, 40)])
    # its pitch is not struck again before its queued note-off has passed (that would cut it short)
    assert not [tt for tt, m in port.note_ons() if m.note == victim.pitch and t < tt <= queued_off_s]
    assert max_sounding(port) == 1
    assert well_paired(port) and engine.scheduler.holds == {}


def test_the_duets_line_ends_the_reaction():
    engine, port, _ = make({"sampling.key": "off"})
    engine.run_until(3.0, [NoteOn(0.5, 0, 40, 90)])  # held: improv plays on with it
    (record,) = duet_ons(engine, at=0.5)
    pitch = record.message.note
    offs = [t for t, m in port.sent if m.type == "note_off" and m.note == pitch]
    assert offs and 0.5 + SPB / 12 - 1e-9 <= offs[0] <= 0.5 + 4 * SPB + 0.1  # a tick .. max_note_beats


def test_without_duet_react_the_duet_plays_as_before():
    model = FakeModel()
    engine, port, _ = make({"mode.duet_react": False}, model=model)
    events = melody()
    for ev in events:
        engine.run_until(ev.t_s)
        steps = model.steps
        engine.feed(ev)
        assert model.steps == steps, "no model work on an event"
    engine.run_until(40.0)
    assert not any(duet_ons(engine, at=ev.t_s) for ev in events)
    assert duet_ons(engine), "the duet still plays along"
    assert engine.improviser.duet.reactions == 0
    assert well_paired(port)


def test_call_mode_never_reacts():
    model = FakeModel()
    engine, port, _ = make({"mode.mode": "call"}, model=model)
    events = melody(n=4)
    for ev in events:
        engine.run_until(ev.t_s)
        steps = model.steps
        engine.feed(ev)
        assert model.steps == steps
    assert port.note_ons() == []
    engine.run_until(6.0)
    assert engine.improviser.responses == 1 and not duet_ons(engine)


def test_the_setting():
    assert load_settings(None).mode.duet_react is True
    assert load_settings(None, {"mode.duet_react": False}).mode.duet_react is False


# ---------------------------------------------------------------------- every note-on gets its note-off


class FlakyModel(FakeModel):
    """Fails on every step while `broken` is set."""

    broken = False

    def step(self, token_id, state):
        if self.broken:
            raise RuntimeError("onnxruntime: session failed")
        return super().step(token_id, state)


def test_a_model_error_after_a_reaction_releases_every_note_the_reaction_too():
    model = FlakyModel()
    engine, port, _ = make({"output.thru": True}, model=model)
    engine.run_until(2.0, melody(n=3, length=1.0))
    assert port.sounding()
    model.broken = True
    engine.feed(NoteOn(2.0, 0, 47, 90))  # the reaction needs no step: it is planned
    assert [p for *_, p in engine.scheduler._heap if p.source == "duet" and p.kind == "on" and p.due_s == 2.0]
    with pytest.raises(ModelError, match="model failed"):
        engine.tick(2.0)  # the context steps the note and the reaction: the model fails
    assert port.sounding() == set()
    model.broken = False  # the daemon forgets what failed and listens on
    engine.scheduler.add(engine.improviser.all_off(2.0))
    engine.run_until(40.0, [NoteOff(2.3, 0, 47), *melody(n=4, t0=2.5)])
    assert duet_ons(engine, at=2.5)
    assert port.sounding() == set()


_moves = st.lists(st.tuples(st.floats(0.0, 0.6), st.integers(40, 76), st.floats(0.0, 1.5),
                            st.sampled_from(["note", "note", "note", "chord", "tick", "mode", "panic"])),
                  min_size=1, max_size=24)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_moves, st.booleans(), st.booleans(), st.integers(1, 4), st.sampled_from(["silence", "stop"]))
def test_every_improv_note_on_gets_exactly_one_note_off(moves, thru, react, polyphony, ending):
    engine, port, clock = make({"output.thru": thru, "mode.duet_react": react, "mode.max_response_beats": 8.0,
                                "sampling.max_polyphony": polyphony})
    t, events, ticks = 0.0, [], []
    for gap, pitch, length, kind in moves:
        t += gap
        if kind in ("note", "chord"):
            for p in (pitch, pitch + 4, pitch + 7) if kind == "chord" else (pitch,):
                events += [NoteOn(t, 0, p, 90), NoteOff(t + length, 0, p)]
        elif kind == "tick":
            ticks.append(t)  # an extra tick at an arbitrary moment (the daemon ticks after input)
        elif kind == "mode":
            events.append(Control(t, 0, 22, 127 if pitch % 2 else 0))
        else:
            events.append(Control(t, 0, 123, 0))
    for at in sorted(ticks):
        engine.run_until(at, [e for e in events if e.t_s <= at])
        events = [e for e in events if e.t_s > at]
    last = max([e.t_s for e in events] + ticks + [0.0])
    if ending == "stop":  # stopped mid-play: shutdown releases everything
        engine.run_until(last, events)
        engine.shutdown()
    else:  # the player stops: the duet plays on a while, then every note has ended by itself
        engine.run_until(last + 30.0, events)
        assert engine.next_wakeup_s() is None
        assert engine.scheduler.holds == {}  # each note-on's hold was released exactly once
        assert all(v.off_s is not None for v in engine.improviser.duet.part.voices)
    assert well_paired(port)
    engine.shutdown()
    assert port.sounding() == set()


class SlowOnTheClock(FakeModel):
    """A model whose every step takes `step_s` of the manual clock, so a test sees exactly what
    a slow machine would: work done after a note was due makes it late. With `scheduler` set, the
    scheduler sends what falls due during a step, as its own thread does in the daemon."""

    def __init__(self, clock: ManualClock, step_s: float) -> None:
        super().__init__()
        self.clock, self.step_s = clock, step_s
        self.scheduler = None

    def step(self, token_id, state):
        end = self.clock.now() + self.step_s
        while self.scheduler is not None and (due := self.scheduler.next_due_s()) is not None and due <= end:
            self.clock.set(max(due, self.clock.now()))
            self.scheduler.run_pending(self.clock.now())
        self.clock.set(end)
        return super().step(token_id, state)


@pytest.mark.parametrize("step_ms", [0.1, 0.3, 0.6])
def test_a_re_plan_leaves_the_model_time_to_deliver_its_first_note(step_ms):
    """Each player note re-plans the line from a guard ahead of now (`ReplanGuard`): measured
    steps x measured step time. With a fixed 5 ms, a model at 0.6 ms a step (bach-lstm plus
    sampling on a busy machine) handed most re-planned first notes to the scheduler after
    their due time, and they went out late."""
    clock = ManualClock()
    settings = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 1, "mode.mode": "duet",
                                    "mode.duet_react": False, "listen.density": False,
                                    "sampling.max_polyphony": 4})  # (a busy line: many re-plans)
    model = SlowOnTheClock(clock, step_ms / 1000)
    engine = Engine(model, settings, clock, FakeMidiOut(clock))
    model.scheduler = engine.scheduler
    engine.run_until(12.0, melody(n=24, t0=1.0, gap=0.37))
    engine.shutdown()
    duet = [r for r in engine.scheduler.records if r.source == "duet" and r.message.type == "note_on"]
    late = [r for r in duet if r.actual_s - r.planned_s > 1e-9]  # the first included: its start is guarded too
    assert len(duet) > 30
    assert not late, f"{len(late)} of {len(duet)} duet note-ons went out late, by up to " \
                     f"{max(r.actual_s - r.planned_s for r in late) * 1000:.2f} ms"
    guard = engine.improviser.duet.guard
    assert guard.seconds() == pytest.approx(max(guard.min_s, guard.MARGIN * guard.steps * guard.step_s))


def test_the_guard_remembers_a_long_re_plan_among_many_short_ones():
    """How many steps a re-plan needs depends on the music, so a rare long one recurs: the
    guard covers the longest of its window, however many short ones came since (a maximum that
    decayed 5 % a re-plan had forgotten it after twenty, and the next long one went out late)."""
    from improv.duet import ReplanGuard

    guard = ReplanGuard(0.005)
    assert guard.steps == ReplanGuard.PRIOR_STEPS  # before anything was measured
    guard.measured(0.010, 20)  # 0.5 ms a step
    steps = 0
    for took in [12] + [3] * (ReplanGuard.WINDOW - 1):
        guard.replanned(steps)
        guard.replanned(steps)  # a second re-plan before the first delivered counts from the first
        steps += took
        guard.delivered(steps)
    assert guard.steps == 12
    assert guard.seconds() == pytest.approx(ReplanGuard.MARGIN * 12 * 0.0005)
    guard.replanned(steps)
    guard.delivered(steps + 3)  # the long one leaves the window
    assert guard.steps == 3 and guard.seconds() == 0.005  # the floor


def test_the_duet_starts_a_guard_ahead_of_the_players_first_note():
    """Its first generator starts like a re-plan's: a guard ahead, so that no note of it is due
    before the model can deliver it (from the player's note it was 3-4 ms late, every time)."""
    engine, _, clock = make({"mode.duet_react": False})
    engine.run_until(1.0, [NoteOn(1.0, 0, 40, 90)])
    duet = engine.improviser.duet
    assert duet.gen is not None
    assert duet.resume_beats >= engine.improviser.clock.beats_at(1.0 + duet.guard.min_s) - 1e-9
