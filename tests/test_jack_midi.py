"""improv's own JACK MIDI client (`improv.jack_midi`) over a real JACK server, in this process:
messages out and back in with stamps on time.perf_counter's clock, the filters, a wake that ends
a wait, the cycle count, and what a closed client does (nothing, or a one-line error)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from improv import jack_midi

pytestmark = pytest.mark.jack


@pytest.fixture
def loop(jack_server, monkeypatch):
    if not jack_midi.available():
        pytest.skip("improv's JACK client is not built")
    for key, value in jack_server.env.items():
        if key.startswith("JACK_"):
            monkeypatch.setitem(os.environ, key, value)
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
            assert sent_s < stamp_s <= time.perf_counter()
            trips.append(stamp_s - sent_s)
        time.sleep(0.002)
    assert len(trips) >= 30 and sorted(trips)[len(trips) // 2] < 0.05
    assert inp.cycles() > 0 and out.cycles() > 0


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
