"""improv's own JACK MIDI client (`improv.jack_midi`) over a real JACK server, in this process:
messages out and back in with stamps on time.perf_counter's clock, sample-accurate both ways (a
message due at a time comes back stamped with it), the order a message keeps behind those it must
follow, what waits goes out at close, the filters, a wake that ends a wait, the cycle count, and
what a closed client does (nothing, or a one-line error)."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from improv import jack_midi

pytestmark = pytest.mark.jack


def on_server(server, monkeypatch) -> None:
    """improv's own JACK clients opened in this process from now on go to `server` (skipped
    where the client is not built)."""
    if not jack_midi.available():
        pytest.skip("improv's JACK client is not built")
    for key, value in server.env.items():
        if key.startswith("JACK_"):
            monkeypatch.setitem(os.environ, key, value)


@pytest.fixture
def loop(jack_server, monkeypatch):
    on_server(jack_server, monkeypatch)
    out = jack_midi.JackMidiClient("out", "jm out")
    out.open_virtual_port("jm out")
    inp = jack_midi.JackMidiClient("in", "jm in")
    inp.open_port(inp.get_ports().index(f"{out.client_name()}:jm out"), "jm in")
    assert out.wait_running(2.0) and inp.wait_running(2.0)
    time.sleep(0.05)  # the connection takes effect from the next cycle
    yield out, inp
    inp.delete()
    out.delete()


def _next(inp, timeout_s=1.0):
    deadline = time.perf_counter() + timeout_s
    while (got := inp.read()) is None and time.perf_counter() < deadline:
        inp.wait(deadline - time.perf_counter())
    return got


def test_messages_come_back_stamped_on_the_perf_counter_clock(loop):
    out, inp = loop
    trips = []
    for velocity in range(1, 41):
        sent_s = time.perf_counter()
        out.send_message([0x90, 60, velocity])
        got = _next(inp)
        if got is not None:  # a non-realtime jackd on busy cores may drop a cycle's events
            stamp_s, data = got
            assert data == bytes([0x90, 60, velocity])
            # its frame's time on JACK's timeline, which may put the cycle's start before the send
            # that made it (a callback late in its cycle): within a few periods either way
            assert sent_s - 0.005 < stamp_s < time.perf_counter() + 0.005
            trips.append(stamp_s - sent_s)
        time.sleep(0.002)
    assert len(trips) >= 30 and sorted(trips)[len(trips) // 2] < 0.05
    assert inp.cycles() > 0 and out.cycles() > 0


def _drain(inp, count, timeout_s=2.0):
    got = []
    while len(got) < count and (item := _next(inp, timeout_s)) is not None:
        got.append(item)
    return got


def test_a_message_due_at_a_time_comes_back_stamped_with_it(loop):
    """Out at the frame of its due time, in at its frame's time: the loop inside JACK takes no time.
    Either side on the cycle's start instead (the callback's time, frame 0) is up to a period off."""
    out, inp = loop
    rng = random.Random(3)
    frame_s = 1 / 48000
    period_s = out.lead_s() - jack_midi.HANDOFF_MARGIN_S
    assert 0 < period_s < 0.05
    errors = []
    for i in range(60):
        due_s = time.perf_counter() + out.lead_s() + rng.uniform(0, 3 * period_s)
        out.send_at([0x90, 60, 1 + i], due_s)
        got = _next(inp)
        if got is not None:  # a non-realtime jackd on busy cores may skip a cycle
            assert got[1] == bytes([0x90, 60, 1 + i])
            errors.append(got[0] - due_s)
        time.sleep(rng.uniform(0.001, 0.004))
    assert len(errors) >= 50
    # each client times frame 0 by its own callback: the input's runs after the output's, by
    # microseconds (more for a client preempted on a loaded machine, now and then)
    errors.sort(key=abs)
    assert abs(errors[len(errors) // 2]) <= frame_s and abs(errors[len(errors) * 4 // 5]) <= 2 * frame_s, errors[-10:]


def test_a_message_never_overtakes_one_it_must_follow(loop):
    out, inp = loop
    due_s = time.perf_counter() + 0.05
    out.send_at([0x90, 60, 100], due_s)  # waits in the client
    out.send_at([0x90, 64, 100], due_s)
    out.send_message([0x80, 60, 0])  # its off: not before it
    out.send_message([0x90, 67, 90])  # another note: goes at once
    out.send_message([0xB0, 123, 0])  # All Notes Off on the channel: after every note of it
    out.send_message([0x91, 60, 80])  # channel 2's: at once
    got = _drain(inp, 6)
    order = [data for _, data in got]
    assert order == [bytes([0x90, 67, 90]), bytes([0x91, 60, 80]), bytes([0x90, 60, 100]),
                     bytes([0x90, 64, 100]), bytes([0x80, 60, 0]), bytes([0xB0, 123, 0])]
    stamps = [t for t, _ in got]
    assert stamps[0] < due_s - 0.02 and all(abs(t - due_s) < 1e-4 for t in stamps[2:])


def test_what_waits_goes_out_when_the_output_closes(loop):
    out, inp = loop
    due_s = time.perf_counter() + 2.0
    out.send_at([0x90, 62, 70], due_s)
    out.send_at([0x80, 62, 0], due_s + 1.0)
    assert out.waiting() == 2
    out.delete()  # long before either is due: both at once, in order
    got = _drain(inp, 2)
    assert [data for _, data in got] == [bytes([0x90, 62, 70]), bytes([0x80, 62, 0])]
    assert all(t < due_s - 1.0 for t, _ in got)


def test_clock_kept_sysex_and_active_sensing_dropped_unless_asked(loop):
    out, inp = loop
    inp.ignore_types(sysex=True, timing=False, active_sense=True)
    for message in ([0xF0, 0x7D, 0x01, 0xF7], [0xFE], [0xF8], [0x80, 60, 0]):
        out.send_message(message)
    got = [_next(inp)[1], _next(inp)[1]]
    assert got == [bytes([0xF8]), bytes([0x80, 60, 0])]
    inp.ignore_types(sysex=False, timing=True, active_sense=False)
    out.send_message([0xF8])
    out.send_message([0xFE])
    assert _next(inp)[1] == bytes([0xFE])


def test_wake_ends_a_wait_and_the_callback_mode_delivers(loop):
    out, inp = loop
    threading.Timer(0.05, inp.wake).start()
    start = time.perf_counter()
    assert inp.wait(5.0) and time.perf_counter() - start < 1.0
    heard = threading.Event()
    inp.set_callback(lambda message, data: heard.set() if message[0] == [0x90, 61, 5] else None)
    out.send_message([0x90, 61, 5])
    assert heard.wait(2.0)
    inp.cancel_callback()


def test_a_closed_client_refuses_sends_and_reads_nothing(loop):
    out, inp = loop
    waiting = threading.Thread(target=inp.wait, args=(10.0,))
    waiting.start()
    time.sleep(0.05)
    inp.delete()  # wakes the thread waiting in C before it frees anything
    waiting.join(2.0)
    assert not waiting.is_alive()
    assert inp.read() is None and inp.get_ports() == [] and inp.cycles() == 0
    out.delete()
    with pytest.raises(OSError, match="closed"):
        out.send_message([0x90, 60, 1])
