"""OSC control (improv.osc) on loopback: set and get through a running daemon (real threads, a
fake MIDI port, fake models), bad messages logged once and survived, the state sent to a target,
and the port bound to 127.0.0.1 unless asked."""

from __future__ import annotations

import logging
import socket
import time

import mido
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from improv.clock import MonotonicClock
from improv.daemon import Daemon
from improv.engine import Engine
from improv.errors import ConfigError
from improv.midi_in import MidiInput
from improv.osc import OscServer, parse
from improv.settings import OscSettings, load_settings
from tests.fakes import FakeModel
from tests.test_daemon import wait_until

pytestmark = pytest.mark.timeout(60)


class Port:
    def __init__(self) -> None:
        self.sent: list[tuple[float, mido.Message]] = []

    def send(self, msg: mido.Message) -> None:
        self.sent.append((time.perf_counter(), msg))


class Client:
    """A UDP socket on loopback that sends OSC to the server and reads what comes back."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send(self, address: str, *args) -> None:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        self.sock.sendto(builder.build().dgram, self.to)

    def received(self, wait_s: float = 0.5) -> dict:
        """{address: first argument} of everything that arrives within `wait_s`."""
        got, deadline = {}, time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            msg = OscMessage(data)
            got[msg.address] = msg.params[0]
        return got


@pytest.fixture
def live():
    """A running daemon (two fake models) with its OSC port on an ephemeral loopback port."""
    low, high = FakeModel(1), FakeModel(2)
    low.name, high.name = "low", "high"
    port = Port()
    settings = load_settings(None, {"time.bpm": 300.0, "sampling.seed": 1})
    engine = Engine(low, settings, MonotonicClock(), port, more_models=[high])
    daemon = Daemon(engine, MidiInput(None))
    osc = OscServer(OscSettings(port=0), deliver=daemon.remote)
    daemon.start()
    osc.start()
    client = Client(osc.address)
    yield daemon, osc, client, port
    osc.close()
    daemon.stop()
    client.sock.close()


def test_parse_checks_addresses_and_argument_types():
    assert parse("/improv/temperature", [0.5]) == ("temperature", 0.5)
    assert parse("/improv/temperature", [1]) == ("temperature", 1.0)
    assert parse("/improv/model", [1.0]) == ("model", 1)  # Max and Pd send floats
    assert parse("/improv/model", ["bach-wavenet"]) == ("model", "bach-wavenet")
    assert parse("/improv/follow", ["auto"]) == ("follow", "auto")
    assert parse("/improv/panic", []) == ("panic", None)
    assert "unknown address" in parse("/improv/temprature", [0.5])
    assert "a number" in parse("/improv/temperature", ["hot"])
    assert "a string" in parse("/improv/mode", [1])
    assert "an integer or a string" in parse("/improv/model", [1.5])
    assert "no arguments" in parse("/improv/panic", [1])
    assert "one argument" in parse("/improv/temperature", [])


def test_set_and_get_over_osc(live):
    daemon, osc, client, _ = live
    imp = daemon.engine.improviser
    client.send("/improv/temperature", 0.5)
    client.send("/improv/length", 2)
    client.send("/improv/follow", 0.25)
    client.send("/improv/mode", "duet")
    client.send("/improv/model", "high")
    assert wait_until(lambda: imp.mode == "duet" and imp.model_name == "high"), imp.model_name
    s = imp.settings
    assert (s.sampling.temperature, s.mode.response_length, s.listen.follow) == (0.5, "2 bars", 0.25)
    assert imp.sampler.temperature == 0.5 and imp.blend.memory_weight == 0.25
    assert daemon.snapshot().model == "high", "the live view shows the model playing"
    client.send("/improv/get")
    time.sleep(0.1)
    osc.publish(daemon.state())  # the main thread's part, a few times a second
    state = client.received()
    assert {k: state[f"/improv/state/{k}"] for k in ("mode", "model", "temperature", "length", "answers")} == \
        {"mode": "duet", "model": "high", "temperature": 0.5, "length": "2 bars", "answers": 0}
    assert "/improv/state/key" in state and "/improv/state/tempo" in state


def test_bad_messages_are_logged_once_and_ignored(live, caplog):
    daemon, osc, client, _ = live
    imp = daemon.engine.improviser
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            client.send("/improv/temprature", 0.5)  # unknown
            client.send("/improv/temperature", "hot")  # wrong type
            client.send("/improv/temperature", 50.0)  # out of range: the settings refuse it
            client.send("/improv/model", 9)  # no model there
            client.sock.sendto(b"not osc at all", osc.address)
        client.send("/improv/temperature", 1.5)  # and it still listens
        assert wait_until(lambda: imp.settings.sampling.temperature == 1.5)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("/improv/temprature" in line for line in lines) == 1
    assert sum("'hot'" in line for line in lines) == 1
    assert sum("sampling.temperature" in line for line in lines) == 1, lines
    assert sum("no model at position 9" in line for line in lines) == 3  # one line per request
    assert daemon.model_errors == 0 and imp.model_name == "low"


def test_panic_over_osc_releases_every_note(live):
    daemon, osc, client, port = live
    for pitch in (60, 64, 67):  # a call; the answer starts a beat (0.2 s) after it ends
        daemon.midi_in.put(time.perf_counter(), [0x90, pitch, 90])
        time.sleep(0.05)
        daemon.midi_in.put(time.perf_counter(), [0x80, pitch, 0])
    assert wait_until(lambda: any(m.type == "note_on" and m.velocity for _, m in port.sent)), "no answer"
    client.send("/improv/panic")
    assert wait_until(lambda: any(m.type == "control_change" and m.control == 123 for _, m in port.sent))
    time.sleep(0.3)
    from tests.test_daemon import hanging

    assert hanging(port.sent) == []


def test_the_state_goes_to_the_target_as_it_changes(live):
    daemon, _, client, _ = live
    target = Client(("127.0.0.1", 9))
    server = OscServer(OscSettings(port=0, target=f"127.0.0.1:{target.address[1]}"))
    try:
        state = daemon.state()
        server.publish(state)
        assert set(target.received(0.3)) == {f"/improv/state/{k}" for k in state}
        server.publish(state)
        assert target.received(0.3) == {}, "nothing changed, nothing sent"
        server.publish({**state, "model": "high"})
        assert target.received(0.3) == {"/improv/state/model": "high"}
    finally:
        server.close()
        target.sock.close()


def test_the_osc_port_listens_on_loopback_unless_asked():
    assert load_settings(None, {"osc.port": 9000}).osc.host == "127.0.0.1"
    server = OscServer(OscSettings(port=0))
    try:
        assert server.address[0] == "127.0.0.1"
        with pytest.raises(ConfigError, match=r"^--osc \d+: cannot listen on 127\.0\.0\.1:\d+ .*pick another port"):
            OscServer(OscSettings(port=server.address[1]))  # taken
    finally:
        server.close()
    with pytest.raises(ConfigError, match="osc.target"):
        load_settings(None, {"osc.target": "nowhere"})


def test_the_toml_tables_for_models_and_osc(tmp_path):
    config = tmp_path / "live.toml"
    config.write_text('[models]\npaths = ["bach-lstm", "bach-wavenet"]\n[osc]\nport = 9000\ntarget = "127.0.0.1:9001"\n'
                      '[cc]\nmodel = 30\n')
    s = load_settings(config)
    assert s.models.paths == ("bach-lstm", "bach-wavenet") and s.cc.model == 30
    assert (s.osc.port, s.osc.host, s.osc.target_address) == (9000, "127.0.0.1", ("127.0.0.1", 9001))
    config.write_text('[models]\npaths = "bach-lstm"\n')
    with pytest.raises(ConfigError, match="models.paths must be a list of strings"):
        load_settings(config)
