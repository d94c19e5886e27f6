"""Over real JACK ports: improv's opens (`improv.ports.open_port`, improv in then improv out, in a
child process as `improv run` does) while clients of another process close at random moments
during the first of them; the child sends through improv out to a C recorder and to improv in. A
client opened while it is its process's only one ignores those removals, and the next client of
the process that gets a closed client's number waits on that client's futex forever: JACK never
runs it, and improv out plays into silence or improv in hears nothing (issue 13, docs/LIVE.md).
improv's JACK client counts its cycles and `open_port` reopens one JACK has not run within
0.5 s, so no trial may be dead. Without that check ("unchecked" in the child's sequence) about
one trial in 13 is (3 of 40). The loop is benchmarks/profiles/jack_opens.py
(`--seq probe,race12,ports -n 100 --shared-jack --churn 0` by hand)."""

from __future__ import annotations

import pytest

from benchmarks.harness.notes import SILENT_SESSION

pytestmark = [pytest.mark.jack, pytest.mark.timeout(300)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.harness.clients import Recorder  # noqa: E402
from benchmarks.profiles import jack_opens  # noqa: E402

TRIALS = 40


def test_start_up_opens_survive_clients_closing_meanwhile(jack_server):
    args = jack_opens.make_parser().parse_args(["--seq", "probe,race12,ports", "--churn", "0"])
    recorder = Recorder("race-rec")
    try:
        done = [jack_opens.trial(jack_server, recorder, args, i) for i in range(TRIALS)]
    finally:
        recorder.close()
    dead = [t for t in done if t["dead"]]
    assert not dead, (f"{SILENT_SESSION}: in {len(dead)} of {TRIALS} start-ups under racing clients nothing sent through "
                      f"improv out arrived at the recorder or at improv in: {dead[:3]}; {jack_server.xruns()}")
