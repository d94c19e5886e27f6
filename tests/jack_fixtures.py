"""A private JACK server for the real-port tests (dummy driver, 48 kHz, 64-frame period).

The `jack_server` fixture is imported once, by tests/conftest.py: one server per test module, at
most one at a time.
Each session gets a server with a unique name; every client (this process, `improv` subprocesses,
jack_connect) finds it through JACK_DEFAULT_SERVER, so parallel runs never share a server.
Without jackd the tests skip, unless IMPROV_REQUIRE_JACK=1, where a missing jackd fails them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RATE_HZ = 48000
PERIOD_FRAMES = 64
PERIOD_S = PERIOD_FRAMES / RATE_HZ  # 1.333 ms: JACK delivers MIDI at the next period boundary


@dataclass
class JackServer:
    name: str
    process: subprocess.Popen
    log_path: Path
    period_s: float = PERIOD_S

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess client of this server."""
        env = dict(os.environ)
        env["JACK_DEFAULT_SERVER"] = self.name
        env["JACK_NO_START_SERVER"] = "1"
        return env

    def _run(self, *args: str, timeout_s: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)

    def ports(self) -> list[str]:
        return [line for line in self._run("jack_lsp").stdout.splitlines() if line.strip()]

    def wait_port(self, suffix: str, timeout_s: float = 10.0) -> str:
        """Full name of THE port ending with `suffix`, polling (sleeping) until exactly one exists.

        A client of a process that just exited lingers until jackd notices, and JACK names a new
        client with a taken name "<name>-01": right after one `improv run` stops and the next
        starts there are two "…:improv in" ports, and the first one listed may be the dead
        one's (the next improv then hears nothing: seen as "in 0 notes" in test_jack and as
        "improv played no answer note" in the bench's call stream, which follows a duet daemon).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            hits = [p for p in self.ports() if p.endswith(suffix)]
            if len(hits) == 1:
                return hits[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"wanted one JACK port *{suffix}, have {hits or self.ports()}")
            time.sleep(0.05)

    def connect(self, source: str, destination: str) -> None:
        result = self._run("jack_connect", source, destination)
        if result.returncode != 0:
            raise AssertionError(f"jack_connect {source} {destination}: {result.stderr.strip()}")

    def xruns(self) -> str:
        """Which clients missed JACK cycles (a starved machine loses MIDI events there)."""
        import collections
        import re

        names = re.findall(r"client = (.+?) was not finished", self.log_path.read_text())
        counts = collections.Counter(names)
        missed = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        return f"jackd {'realtime' if self.realtime else 'not realtime'}; cycles missed per client: {missed}"

    @property
    def realtime(self) -> bool:
        """Whether jackd got realtime scheduling (it falls back quietly where it may not)."""
        log = self.log_path.read_text()
        return "starting in realtime mode" in log and "Cannot use real-time scheduling" not in log

    def alive(self) -> bool:
        return self.process.poll() is None


def _start(name: str, log_path: Path) -> subprocess.Popen:
    # The server's own log is chatty (xruns in non-realtime mode): keep it in a file for failures.
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    # Not realtime by default, as CI machines allow: measured here, a realtime jackd's SCHED_FIFO
    # client threads (5 of them, on 2 cores) preempted improv's own scheduler thread, and answer
    # notes went out 3 ms late. IMPROV_JACK_REALTIME=1 asks for it (jackd falls back quietly
    # where it may not, saying "Cannot use real-time scheduling").
    rt = "--realtime" if os.environ.get("IMPROV_JACK_REALTIME") == "1" else "--no-realtime"
    cmd = ["jackd", "-n", name, rt, "-d", "dummy", "-r", str(RATE_HZ),
           "-p", str(PERIOD_FRAMES)]
    env = dict(os.environ, JACK_DEFAULT_SERVER=name)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_ready(server: JackServer, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"jackd exited: {server.log_path.read_text()[-2000:]}")
        try:  # jack_wait -c exits 0 either way; it prints "running" or "not running"
            out = server._run("jack_wait", "-c", "-s", server.name, timeout_s=5).stdout
            if out.strip() == "running":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jackd {server.name} not ready after {timeout_s} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory) -> Iterator[JackServer]:
    """A running JACK server for this test module; JACK_DEFAULT_SERVER points at it meanwhile.
    One per module, stopped at its end: a fresh server for each module's tests (clients killed
    and restarted by one module leave nothing behind for the next), and never several at once."""
    if shutil.which("jackd") is None:
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("IMPROV_REQUIRE_JACK=1 but jackd is not installed (apt install jackd2)")
        pytest.skip("jackd not installed (set IMPROV_REQUIRE_JACK=1 to make this a failure)")
    name = f"improv-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path_factory.mktemp("jack") / "jackd.log"
    server = JackServer(name, _start(name, log_path), log_path)
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(server.process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
