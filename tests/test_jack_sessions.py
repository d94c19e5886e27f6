"""Over real JACK ports: improv started and stopped 10 times the way a user does (start-up, MIDI
clock, a call, the answer, SIGTERM), each session with its own C recorder on improv's output. No
session may play into silence: improv sending notes while the recorder receives nothing at all
(issue 13). The loop is benchmarks/profiles/jack_sessions.py (`-n 48` by hand)."""

from __future__ import annotations

import pytest

from benchmarks.harness.notes import SILENT_SESSION

pytestmark = [pytest.mark.jack, pytest.mark.timeout(240)]

rtmidi = pytest.importorskip("rtmidi")
from benchmarks.profiles.jack_sessions import session  # noqa: E402

SESSIONS = 10


def test_no_session_plays_into_silence(jack_server, tiny_model_dir, tmp_path):
    done = [session(jack_server, tiny_model_dir, tmp_path, i) for i in range(SESSIONS)]
    silent = [s for s in done if s.silent]
    assert not silent, (f"{SILENT_SESSION}: {len(silent)} of {SESSIONS} sessions sent notes and their recorder "
                        f"received nothing at all: {silent}; {jack_server.xruns()}")
    assert all(s.exit_code == 0 for s in done), done
    answered = sum(s.heard > 0 for s in done)
    assert answered >= SESSIONS // 2, f"only {answered} of {SESSIONS} sessions were answered: {done}; {jack_server.xruns()}"
