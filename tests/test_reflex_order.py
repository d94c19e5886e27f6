"""On a realtime JACK server the duet's reflex answers in the very cycle of the note it answers
(improv/native/jack_midi.c `jm_reflex_link`): a connection between improv's two clients' "reflex"
ports, carrying nothing, makes JACK run the output client after the input client. Without it the
output client, fed by no one, runs first and the answer leaves a period later (0.99 ms at 64
frames when the connection was taken out). A server of its own, realtime, for this module only;
skipped where the system gives jackd no realtime scheduling."""

from __future__ import annotations

import pytest

from benchmarks.harness import jackd
from improv import jack_midi
from tests.test_reflex import answered_once, wire

pytestmark = pytest.mark.jack


@pytest.fixture(scope="module")
def realtime_server(tmp_path_factory):
    if not jack_midi.available():
        pytest.skip("improv's JACK client is not built")
    with jackd.running("improv-test-rt", tmp_path_factory.mktemp("jack") / "jackd.log", realtime=True) as server:
        if not server.realtime:
            pytest.skip("jackd got no realtime scheduling here")
        yield server


@pytest.fixture
def wired_rt(realtime_server, monkeypatch):
    yield from wire(realtime_server, monkeypatch, expect_order=1)


def test_the_answer_leaves_in_the_notes_own_cycle(wired_rt):
    late_s = answered_once(*wired_rt)
    assert abs(late_s) < 0.0002, f"written {late_s * 1e3:.3f} ms after the note's frame: not in its cycle"
    _, improv_in, improv_out, _ = wired_rt
    ports = improv_in.get_ports()  # (an input client lists the outputs it could connect to)
    assert f"{improv_in.client_name()}:reflex" in ports
