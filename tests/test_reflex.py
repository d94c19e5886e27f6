"""The duet's reflex (improv/native/jack_reflex.h, `improv.reflex`) over a real JACK server, in
this process: a player's note-on answered at its frame (in the cycle that brings it in on a
realtime server: tests/test_reflex_order.py; else in that or the next), as
`Reaction.draw_ready` would draw it, the victim let go first, the record read before the
note-on, once per arming, never for a table armed before a message the engine has not read, only
on the table's channel; and the engine's side: what the reflex played is taken as sent and
adopted by the duet, released when nothing adopts it, and by the panic at shutdown."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest

from improv import jack_midi
from improv.reflex import NOTES, Reflex, Table, _Fired
from tests.test_jack_midi import on_server

pytestmark = pytest.mark.jack


@pytest.fixture
def wired(jack_server, monkeypatch):
    yield from wire(jack_server, monkeypatch)


def wire(server, monkeypatch, expect_order: int = 0):
    """(player out, improv in, improv out, recorder in) on `server`: player -> improv in; improv
    out -> recorder; the reflex linked (ordered only on a realtime server: `expect_order`)."""
    on_server(server, monkeypatch)
    player = jack_midi.JackMidiClient("out", "rx player")
    player.open_virtual_port("rx player")
    improv_in = jack_midi.JackMidiClient("in", "rx in")
    improv_in.open_port(improv_in.get_ports().index(f"{player.client_name()}:rx player"), "rx in")
    improv_out = jack_midi.JackMidiClient("out", "rx out")
    improv_out.open_virtual_port("rx out")
    recorder = jack_midi.JackMidiClient("in", "rx rec")
    recorder.open_port(recorder.get_ports().index(f"{improv_out.client_name()}:rx out"), "rx rec")
    for client in (player, improv_in, improv_out, recorder):
        assert client.wait_running(2.0)
    assert improv_in.reflex_link(improv_out) == expect_order
    time.sleep(0.05)  # connections take effect from the next cycle
    yield player, improv_in, improv_out, recorder
    improv_in.reflex_link(None)
    _fired()
    for client in (recorder, improv_out, improv_in, player):
        client.delete()


def _table(rows: dict[int, list[tuple[int, float]]], u: float, victim: int = -1, channel: int = 2,
           listen: int = -1) -> Table:
    """Row c: [(pitch, weight), ...] -> a reflex table over a vocabulary of note starts, token p + 1
    for pitch p after a token that is none (velocity: the player's, halved)."""
    t = Table()
    t.size = 129
    for p in range(NOTES):
        t.on_id[p], t.pitch[p + 1], t.is_on[p + 1] = p + 1, p, 1
    for c, notes in rows.items():
        weights = np.zeros(t.size)
        for pitch, w in notes:
            weights[pitch + 1] = w
        for i, cum in enumerate(np.cumsum(weights)):
            t.cum[c][i] = cum
    for v in range(NOTES):
        t.velocity[v] = max(1, v // 2)
    t.listen_channel, t.out_channel, t.victim, t.victim_until, t.u = listen, channel, victim, 1e300, u
    return t


def _read_all(client, timeout_s=0.3):
    got, deadline = [], time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        item = client.read()
        if item is None:
            client.wait(0.01)
            continue
        got.append(item)
    return got


def _fired():
    """The records of what the reflex played, taken."""
    lib, rec = jack_midi._load(), _Fired()
    out = []
    while lib.jm_reflex_fired(ctypes.byref(rec)):
        out.append((rec.stamp, rec.seq, rec.struck, rec.pitch, rec.velocity, rec.channel, rec.victim))
    return out


def test_a_note_on_is_answered_at_its_own_frame_once(wired):
    answered_once(*wired)


def answered_once(player, improv_in, improv_out, recorder) -> float:
    """A note-on answered by the reflex, once; returns how long after the note's frame (s)."""
    _fired()
    # u = 0.5 of what is left once the struck key's own weight (C3 = 48, weight 1) is left out:
    # 0.5 x 3 = 1.5 over [E 64: 1, G 67: 2] -> G
    improv_in.reflex_arm(_table({0: [(48, 1.0), (64, 1.0), (67, 2.0)]}, u=0.5))
    player.send_message([0x90, 48, 100])
    heard = _read_all(improv_in)
    got = _read_all(recorder)
    assert [list(d) for _, d in heard] == [[0x90, 48, 100]]
    assert [list(d) for _, d in got] == [[0x92, 67, 50]], "the draw of Reaction.draw_ready, on the table's channel"
    late_s = got[0][0] - heard[0][0]  # in its cycle where JACK runs the output after the input, else the next
    assert -0.0002 < late_s < improv_in.lead_s() - jack_midi.HANDOFF_MARGIN_S + 0.0002, f"written {late_s * 1e3:.3f} ms after the note's frame"
    (stamp, seq, struck, pitch, velocity, channel, victim), = _fired()
    assert (stamp, struck, pitch, velocity, channel, victim) == (heard[0][0], 48, 67, 50, 2, -1)
    assert seq == improv_in.reads() - 1
    player.send_message([0x90, 48, 100])  # once per arming
    assert _read_all(improv_in) and not _read_all(recorder) and not _fired()
    return late_s


def test_the_victim_goes_first_and_the_struck_key_is_never_drawn(wired):
    player, improv_in, _, recorder = wired
    _fired()
    improv_in.reflex_arm(_table({1: [(49, 5.0), (61, 1.0)]}, u=0.999, victim=70))
    player.send_message([0x91, 49, 80])  # C#3 on channel 1 (any channel: listen -1)
    _read_all(improv_in)
    assert [list(d) for _, d in _read_all(recorder)] == [[0x82, 70, 0], [0x92, 61, 40]]
    assert _fired()[0][6] == 70


def test_stale_tables_and_other_channels_are_not_answered(wired):
    player, improv_in, _, recorder = wired
    _fired()
    player.send_message([0x80, 10, 0])  # in the ring, not read yet: a table armed now is stale
    time.sleep(0.05)
    improv_in.reflex_arm(_table({0: [(60, 1.0)]}, u=0.1))
    player.send_message([0x90, 48, 100])
    assert len(_read_all(improv_in)) == 2 and not _read_all(recorder) and not _fired()
    improv_in.reflex_arm(_table({c: [(61, 1.0)] for c in range(12)}, u=0.1))
    player.send_message([0x90, 0xC5, 0x40])  # not a note-on: a data byte with the high bit set
    assert len(_read_all(improv_in)) == 1 and not _read_all(recorder) and not _fired()
    improv_in.reflex_arm(_table({0: [(60, 1.0)]}, u=0.1, listen=5))  # everything read: armed, channel 6 only
    player.send_message([0x90, 48, 100])
    _read_all(improv_in)
    assert not _read_all(recorder) and not _fired()
    improv_in.reflex_arm(_table({0: [(60, 1.0)]}, u=0.1, listen=5))
    jack_midi._load().jm_reflex_disarm()
    player.send_message([0x95, 48, 100])
    _read_all(improv_in)
    assert not _read_all(recorder), "a disarmed table plays nothing"
    improv_in.reflex_arm(None)  # the same table again
    player.send_message([0x95, 48, 100])
    _read_all(improv_in)
    assert [list(d) for _, d in _read_all(recorder)] == [[0x92, 60, 50]]


def test_reflex_links_only_improvs_jack_clients(wired):
    player, improv_in, improv_out, _ = wired

    class Port:
        rt = improv_out

    assert isinstance(Reflex.between(improv_in, Port()), Reflex)
    assert Reflex.between(object(), Port()) is None
    Port.rt = object()
    assert Reflex.between(improv_in, Port()) is None


# ---------------------------------------------------------------------- the engine's side


@pytest.fixture
def duet(wired, tiny_model_dir):
    """An engine in duet mode on the wired clients, with the reflex, not threaded (`step` drives it)."""
    from improv.clock import MonotonicClock
    from improv.engine import Engine
    from improv.midi_in import MidiInput
    from improv.midi_port import OpenPort
    from improv.model_step import StepModel
    from improv.settings import load_settings

    player, improv_in, improv_out, recorder = wired
    port = OpenPort(improv_out, "rx out", "jack", virtual=True)
    settings = load_settings(None, {"mode.mode": "duet", "time.bpm": 120.0, "sampling.seed": 5})
    engine = Engine(StepModel.load(tiny_model_dir), settings, MonotonicClock(), port, reflex=Reflex(improv_in, port))
    yield engine, MidiInput(improv_in), player, recorder
    engine.shutdown()


def _feed(engine, midi_in, timeout_s=0.3):
    """Read what came in (waiting up to `timeout_s` for the first message) and feed it, then tick."""
    item = midi_in.get(timeout_s)
    while item is not None:
        engine.feed_message(*item)
        item = midi_in.get_nowait()
    engine.tick()


def _armed(engine, midi_in, player, pitch=40):
    """Play note-ons of `pitch` until the duet has a table armed for the next one."""
    for _ in range(40):
        player.send_message([0x90, pitch, 90])
        _feed(engine, midi_in)
        player.send_message([0x80, pitch, 0])
        _feed(engine, midi_in)
        for _ in range(20):
            if engine.reflex._armed:
                return
            time.sleep(0.01)
            engine.tick()
    pytest.fail("the duet never armed the reflex")


def _drawn_by_python(reaction, struck, u):
    """What `Reaction.draw_ready` gives for key `struck` with the uniform number `u` (the table kept)."""

    class Fixed:
        def random(self):
            return u

    sampler, ready = reaction.performer.sampler, reaction.ready
    rng, sampler.rng = sampler.rng, Fixed()
    try:
        assert ready
        return reaction.draw_ready(struck)
    finally:
        sampler.rng, reaction.ready = rng, ready


def _ons(received, pitch):
    return [t for t, d in received if len(d) == 3 and d[0] & 0xF0 == 0x90 and d[2] > 0 and d[1] == pitch]


def _left_sounding(received):
    on = set()
    for _, d in received:
        if len(d) == 3 and d[0] & 0xF0 in (0x80, 0x90):
            (on.add if d[0] & 0xF0 == 0x90 and d[2] > 0 else on.discard)((d[0] & 0x0F, d[1]))
        elif len(d) == 3 and d[0] & 0xF0 == 0xB0 and d[1] == 123:
            on = {k for k in on if k[0] != d[0] & 0x0F}
    return on


def test_the_engine_adopts_what_the_reflex_played(duet):
    engine, midi_in, player, recorder = duet
    _armed(engine, midi_in, player)
    _read_all(recorder, 0.05)
    duet_ = engine.improviser.duet
    expected = _drawn_by_python(duet_.reaction, 43, engine.reflex._table.u)
    before = duet_.prepared_reactions
    duet_.heard_something(tick=True)  # a tick has begun: a note-on meanwhile is answered from the table before it
    player.send_message([0x90, 43, 90])
    _feed(engine, midi_in)
    got = _read_all(recorder, 0.1)
    assert duet_.prepared_reactions == before + 1 and engine.reflex.taken == 1
    played = engine.reflex.last
    sent, = [r for r in engine.scheduler.records if r.source == "duet" and r.message.type == "note_on"
             and r.message.note == played.pitch and r.planned_s == played.t_s]
    assert sent.actual_s == played.t_s, "recorded as sent at the note-on's own time"
    assert played.pitch == expected, "the note Reaction.draw_ready draws from the same table and number"
    assert any(v.pitch == sent.message.note for v in duet_.part.voices), "the duet's part holds it"
    assert len(_ons(got, sent.message.note)) == 1, "played once: by the reflex, not again by the scheduler"
    assert _ons(got, sent.message.note)[0] - sent.planned_s < 0.01
    engine.shutdown()
    assert not _left_sounding(got + _read_all(recorder, 0.1))


def test_what_nothing_adopts_is_released(duet):
    engine, midi_in, player, recorder = duet
    _armed(engine, midi_in, player)
    player.send_message([0x90, 43, 90])  # played in the cycle; the engine has not read it ...
    time.sleep(0.05)
    engine.remote("mode", "call")  # ... and leaves the duet before it does
    _feed(engine, midi_in)
    got = _read_all(recorder, 0.1)
    assert engine.reflex.taken == 1
    assert not _left_sounding(got), "released at once: call mode has no reaction to adopt it"


def test_shutdown_releases_what_the_reflex_played_and_nobody_read(duet):
    engine, midi_in, player, recorder = duet
    _armed(engine, midi_in, player)
    player.send_message([0x90, 43, 90])
    time.sleep(0.05)
    record = _Fired()
    assert jack_midi._load().jm_reflex_peek(ctypes.byref(record)), "the reflex played"
    engine.shutdown()
    got = _read_all(recorder, 0.15)
    on = max(t for t, d in got if d[0] & 0xF0 == 0x90 and d[2] > 0 and d[1] == record.pitch)
    assert any(t >= on and (d[0] & 0xF0 == 0x80 or d[0] & 0xF0 == 0x90 and d[2] == 0) and d[1] == record.pitch
               for t, d in got), "a note-off for it, not only All Notes Off"
    assert not _left_sounding(got)
