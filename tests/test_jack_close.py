"""Over real JACK ports: improv's clients opened and closed again and again while messages flow
through them (improv out wired to improv in, the input read as the engine reads it), in a child
process so that a crash is a failure and not the end of the test run. python-rtmidi's JACK close
unregisters the port while the process callback may still use it, and its input callback waits
for the GIL inside the server's cycle while the close holds the GIL: the child segfaults or hangs
(IMPROV_JACK_MIDI=rtmidi shows it). improv's own client deactivates before its port goes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.jack, pytest.mark.timeout(300)]

ROUNDS = 150
CHILD_TIMEOUT_S = 150.0

CHILD = textwrap.dedent(f"""
    import faulthandler, threading, time
    import mido
    from improv.midi_in import MidiInput
    from improv.ports import open_port
    faulthandler.enable()
    faulthandler.dump_traceback_later({CHILD_TIMEOUT_S - 5}, exit=True)

    def keep_sending(midi_out, stop):
        k = 0
        while not stop.is_set():
            try:
                midi_out.send(mido.Message("note_on", note=60, velocity=1 + k % 100))
            except Exception:  # closed: improv.ports.OpenPort refuses
                pass
            k += 1
            time.sleep(0.0005)

    deaf = 0
    for round in range({ROUNDS}):
        midi_in = open_port("in", None, "jack", "close in")
        midi_out = open_port("out", "close in", "jack", "close out")
        source = MidiInput(midi_in.rt)
        stop = threading.Event()
        sender = threading.Thread(target=keep_sending, args=(midi_out, stop))
        sender.start()
        heard, deadline = 0, time.perf_counter() + 0.03
        while time.perf_counter() < deadline:
            heard += source.get(0.005) is not None
        deaf += heard == 0
        source.close()
        midi_in.close()  # while messages still arrive
        midi_out.close()  # while the sender still sends
        stop.set()
        sender.join()
    print("rounds", {ROUNDS}, "deaf", deaf, flush=True)
""")


def test_clients_close_cleanly_while_messages_flow(jack_server):
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], env=jack_server.env, capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the child hung opening and closing JACK clients: {err.stderr!r:.600}")
    assert done.returncode == 0, (f"the child died opening and closing JACK clients (exit {done.returncode}): "
                                  f"{done.stderr[-800:]}")
    rounds, deaf = (int(word) for word in done.stdout.split()[1::2])
    assert rounds == ROUNDS
    assert deaf <= ROUNDS // 10, f"{deaf} of {ROUNDS} rounds heard nothing of what improv out sent"
