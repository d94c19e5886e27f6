"""Port naming, backend choice and the no-MIDI-system message, with fake rtmidi clients."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from improv import midi_port, ports
from improv.errors import MidiPortError
from improv.midi_in import MidiInput

NAMES = ["Midi Through:Midi Through Port-0 14:0", "KeyStep:KeyStep MIDI 1 20:0",
         "KeyStep:KeyStep MIDI 2 20:1", "improv in:improv in"]


@pytest.mark.parametrize(
    ("spec", "index"),
    [("KeyStep:KeyStep MIDI 2 20:1", 2), ("1", 1), ("0", 0), ("through", 0), ("MIDI 2", 2),
     ("improv in", 3)],
)
def test_resolve_exact_index_substring(spec, index):
    assert midi_port.resolve(spec, NAMES) == index


def test_resolve_exact_name_wins_over_substring():
    names = ["synth", "synth 2"]
    assert midi_port.resolve("synth", names) == 0


def test_resolve_ambiguous_lists_the_candidates():
    with pytest.raises(MidiPortError) as err:
        midi_port.resolve("keystep", NAMES, "input")
    message = str(err.value)
    assert "ambiguous" in message and "1: KeyStep:KeyStep MIDI 1 20:0" in message
    assert "2: KeyStep:KeyStep MIDI 2 20:1" in message and "Through" not in message
    assert "\n" not in message


def test_resolve_unknown_lists_every_port():
    with pytest.raises(MidiPortError) as err:
        midi_port.resolve("nord", NAMES, "output")
    message = str(err.value)
    assert "no MIDI output matches 'nord'" in message
    assert all(name in message for name in NAMES) and "\n" not in message


def test_resolve_out_of_range_index_is_unknown():
    with pytest.raises(MidiPortError, match="candidates"):
        midi_port.resolve("7", NAMES)


def test_resolve_with_no_ports_says_none():
    with pytest.raises(MidiPortError, match="candidates: none"):
        midi_port.resolve("x", [])


class FakeRt:
    """Stands in for rtmidi.MidiIn / MidiOut."""

    def __init__(self, names):
        self.names, self.opened, self.virtual, self.closed = list(names), None, None, False
        self.callback = None

    def get_ports(self):
        return self.names

    def open_port(self, index, name):
        self.opened = index

    def open_virtual_port(self, name):
        self.virtual = name

    def ignore_types(self, **kwargs):
        self.ignored = kwargs

    def set_callback(self, callback):
        self.callback = callback

    def cancel_callback(self):
        self.callback = None

    def close_port(self):
        self.closed = True

    def delete(self):
        pass


@pytest.fixture
def fake_clients(monkeypatch):
    made = []

    def client(backend, kind, client_name):
        made.append(FakeRt(NAMES))
        return made[-1]

    monkeypatch.setattr(ports, "_client", client)
    return made


def test_open_port_by_substring(fake_clients):
    port = ports.open_port("out", "MIDI 1", "alsa")
    assert port.name == NAMES[1] and fake_clients[0].opened == 1 and not port.virtual


def test_open_port_virtual_when_unnamed(fake_clients):
    port = ports.open_port("in", None, "jack")
    assert port.virtual and port.name == "improv in" and fake_clients[0].virtual == "improv in"


def test_open_port_unknown_closes_the_client(fake_clients):
    with pytest.raises(MidiPortError, match="candidates"):
        ports.open_port("in", "nord", "alsa")
    assert fake_clients[0].closed


def test_winmm_has_no_virtual_ports(fake_clients):
    with pytest.raises(MidiPortError, match="no virtual ports"):
        ports.open_port("out", None, "winmm")


def test_unknown_backend_names_the_choices():
    with pytest.raises(MidiPortError, match="alsa, jack, coremidi, winmm"):
        ports.check_backend("oss")


@pytest.fixture
def no_midi_system(monkeypatch):
    """No ALSA sequencer, and a JACK server name nobody runs."""
    real_exists = os.path.exists
    monkeypatch.setattr(ports.os.path, "exists",
                        lambda p: False if p == ports.ALSA_SEQ else real_exists(p))
    monkeypatch.setattr(ports.sys, "platform", "linux")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"nobody-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")


def test_no_midi_system_message(no_midi_system):
    if "alsa" not in ports.compiled_backends():
        pytest.skip("python-rtmidi here has no ALSA")
    with pytest.raises(MidiPortError) as err:
        ports.choose_backend(None)
    assert str(err.value) == ports.FIX_ALSA
    assert "sudo modprobe snd-seq" in str(err.value) and "--backend jack" in str(err.value)


def test_unusable_backends_show_the_reason(no_midi_system, capfd):
    statuses = {s.name: s for s in ports.list_all()}
    if "alsa" in statuses:
        assert not statuses["alsa"].usable and "modprobe snd-seq" in statuses["alsa"].reason
    if "jack" in statuses:
        assert not statuses["jack"].usable and "JACK" in statuses["jack"].reason
    assert "Cannot connect to server" not in capfd.readouterr().err  # libjack's chatter is muted


def _no_midi_env() -> dict[str, str]:
    return dict(os.environ, JACK_DEFAULT_SERVER=f"nobody-{uuid.uuid4().hex[:8]}",
                JACK_NO_START_SERVER="1", IMPROV_VERBOSE="")


@pytest.mark.skipif(os.path.exists("/dev/snd/seq"), reason="this machine has an ALSA sequencer")
def test_ports_command_without_midi_exits_nonzero_in_one_line():
    result = subprocess.run([sys.executable, "-m", "improv.cli", "ports"], env=_no_midi_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unusable" in result.stdout and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_callback_only_stamps_and_enqueues():
    rt = FakeRt([])
    midi_in = MidiInput(rt)
    before = time.perf_counter()
    rt.callback(([0x90, 60, 100], 0.0), None)
    t_s, data = midi_in.get(timeout_s=0.1)
    assert before <= t_s <= time.perf_counter() and data == [0x90, 60, 100]
    assert midi_in.get(timeout_s=0.0) is None
    assert rt.ignored["timing"] is False  # MIDI clock must come through
    midi_in.close()
    assert rt.callback is None
