"""Shared fixtures: tiny exported models, so runtime tests need no trained model; the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The JACK server (module-scoped: one at a time). Imported into each test module instead, the fixture
# was a new session-scoped definition per module: four jackd servers (each waking 750 times a second)
# ran side by side by the end of the suite, and the timing tests late in it paid for them.
from tests.jack_fixtures import jack_server  # noqa: F401 - fixture


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
    --timing-log) beside what arrived, so the two are told apart."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if item.get_closest_marker("jack") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=JACK_RERUNS))


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
