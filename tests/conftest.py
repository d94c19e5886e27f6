"""Shared fixtures: tiny exported models, so runtime tests need no trained model; the shared data;
a private JACK server for the real-port tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness import jackd
from benchmarks.harness.notes import SILENT_SESSION
from improv import jack_midi


JACK_RERUNS = 2
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # ../shared/data from the repo root


def pytest_collection_modifyitems(config, items):
    """Real-port tests run again (twice at most) when they fail, each rerun shown as "R" in the
    report. Their premise is a transport that delivers, and a non-realtime jackd on 2 busy
    cores does not always: a client that misses its cycle (hundreds per test module, in the
    server's log) loses that cycle's events - a call note improv never hears, so it answers a
    beat early; a note-off the recorder never sees. Measured before the reruns: about one such
    failure per full run, each a different test (tests/test_jack.py run alone: 1 run in 5). A
    fault of improv's own fails every run; the message of each says what improv sent (its
    --timing-log) beside what arrived, so the two are told apart. A session in which improv sent
    notes and nothing at all arrived (SILENT_SESSION starts the message) is never rerun: a lossy
    transport loses some events, never all (issue 13); each rerun is listed with its cause at the end."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if item.get_closest_marker("jack") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=JACK_RERUNS, rerun_except=SILENT_SESSION))


_RERUNS: list[tuple[str, str]] = []  # (test, the first line of why it failed)


def pytest_runtest_logreport(report):
    if report.outcome == "rerun":
        crash = getattr(report.longrepr, "reprcrash", None)
        why = crash.message if crash is not None else str(report.longrepr)
        _RERUNS.append((report.nodeid, (why.strip().splitlines() or ["?"])[0][:300]))


def pytest_terminal_summary(terminalreporter):
    if _RERUNS:
        terminalreporter.section("reruns, with their cause")
        for nodeid, why in _RERUNS:
            terminalreporter.write_line(f"{nodeid}: {why}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny untrained LSTM step model (event vocabulary), exported per docs/DESIGN.md."""
    from tests.tiny_models import export_tiny

    return export_tiny("lstm", tmp_path_factory.mktemp("models") / "tiny-lstm")


@pytest.fixture(scope="session")
def tiny_wavenet_dir(tmp_path_factory):
    """A tiny untrained WaveNet step model (dilations 1, 2, 4, 1, 2, 4)."""
    from tests.tiny_models import export_tiny

    return export_tiny("wavenet", tmp_path_factory.mktemp("models") / "tiny-wavenet")


def shared_file(name: str) -> Path:
    """A file in ../shared/data beside the repository (README there). Missing, it skips the test,
    or fails it under IMPROV_REQUIRE_SHARED=1 (CI sets it), so CI never passes by skipping."""
    path = SHARED_DATA / name
    if not path.is_file():
        if os.environ.get("IMPROV_REQUIRE_SHARED") == "1":
            pytest.fail(f"IMPROV_REQUIRE_SHARED=1 but {path} is missing; put the shared data beside the repository")
        pytest.skip(f"{path} is missing (set IMPROV_REQUIRE_SHARED=1 to make this a failure)")
    return path


@pytest.fixture(scope="session")
def jsb_archive() -> Path:
    """The JSB chorales 16th-note archive, ../shared/data/jsb_chorales.tgz."""
    return shared_file("jsb_chorales.tgz")


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory) -> Iterator[jackd.JackServer]:
    """A running JACK server (benchmarks.harness.jackd) for this test module; JACK_DEFAULT_SERVER
    points at it meanwhile. One per module, stopped at its end, never several at once: a fresh
    server for each module's tests (clients killed and restarted by one module leave nothing
    behind for the next), and no idle servers, each waking 750 times a second, slowing the timing
    tests late in the suite. Without jackd the tests skip, unless IMPROV_REQUIRE_JACK=1 makes that
    a failure; IMPROV_JACK_REALTIME=1 asks for a realtime jackd."""
    if shutil.which("jackd") is None:
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("IMPROV_REQUIRE_JACK=1 but jackd is not installed (apt install jackd2)")
        pytest.skip("jackd not installed (set IMPROV_REQUIRE_JACK=1 to make this a failure)")
    if os.environ.get("IMPROV_REQUIRE_JACK") == "1" and not jack_midi.available():
        pytest.fail("IMPROV_REQUIRE_JACK=1 but improv's JACK client is not built (improv/_jack_midi*.so: "
                    "install gcc and jackd2, then pip install -e .)")
    log_path = tmp_path_factory.mktemp("jack") / "jackd.log"
    realtime = os.environ.get("IMPROV_JACK_REALTIME") == "1"
    with jackd.running("improv-test", log_path, realtime=realtime) as server:
        yield server
