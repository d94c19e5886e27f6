"""A private JACK server (dummy driver) for the real-port tests and `improv bench`.

Each server gets a unique name; every client (this process, `improv` subprocesses, jack_connect)
finds it through JACK_DEFAULT_SERVER, so parallel runs never share a server. Not realtime unless
asked: measured here, a realtime jackd's SCHED_FIFO client threads (5 of them, on 2 cores)
preempted improv's own scheduler thread, and answer notes went out 3 ms late.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 48000
PERIOD_FRAMES = 64  # 1.333 ms at 48 kHz: JACK delivers MIDI at the next period boundary
ENV_KEYS = ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")


@dataclass
class JackServer:
    name: str
    process: subprocess.Popen
    log_path: Path
    period_s: float = PERIOD_FRAMES / RATE_HZ

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess client of this server."""
        return dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")

    def _run(self, *args: str, timeout_s: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout_s)

    def ports(self) -> list[str]:
        return [line for line in _lines(self._run("jack_lsp").stdout) if line.strip()]

    def wait_port(self, suffix: str, timeout_s: float = 10.0) -> str:
        """Full name of THE port ending with `suffix`, polling (sleeping) until exactly one exists.

        A client of a process that just exited lingers until jackd notices, and JACK names a new
        client with a taken name "<name>-01": right after one `improv run` stops and the next
        starts there are two "…:improv in" ports, and the first one listed may be the dead one's.
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
        names = re.findall(r"client = (.+?) was not finished", self.log_path.read_text())
        missed = ", ".join(f"{k} {v}" for k, v in collections.Counter(names).items()) or "none"
        return f"jackd {'realtime' if self.realtime else 'not realtime'}; cycles missed per client: {missed}"

    @property
    def realtime(self) -> bool:
        """Whether jackd got realtime scheduling (it falls back quietly where it may not)."""
        log = self.log_path.read_text()
        return "starting in realtime mode" in log and "Cannot use real-time scheduling" not in log

    def alive(self) -> bool:
        return self.process.poll() is None


def start(name: str, log_path: Path, *, period: int = PERIOD_FRAMES, rate_hz: int = RATE_HZ,
          realtime: bool = False, port_max: int | None = None, verbose: bool = False) -> JackServer:
    """Spawn `jackd -n NAME` (dummy driver); its chatty log (xruns) goes to `log_path`. `verbose`:
    jackd -v, which makes every client's libjack log its side (clients opened, futexes mapped) too."""
    cmd = ["jackd", "-n", name, "--realtime" if realtime else "--no-realtime"] + (["-v"] if verbose else [])
    if port_max is not None:
        cmd += ["--port-max", str(port_max)]
    cmd += ["-d", "dummy", "-r", str(rate_hz), "-p", str(period)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, JACK_DEFAULT_SERVER=name))
    return JackServer(name, process, log_path, period_s=period / rate_hz)


def wait_ready(server: JackServer, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"jackd exited: {server.log_path.read_text()[-2000:]}")
        try:  # jack_wait -c exits 0 either way; it prints "running" or "not running"
            if "running" in _lines(server._run("jack_wait", "-c", "-s", server.name, timeout_s=5).stdout):
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jackd {server.name} not ready after {timeout_s:g} s")


def _lines(stdout: str) -> list[str]:
    """A JACK tool's output lines, without libjack's own ("Jack: ...", under a verbose server)."""
    return [line.strip() for line in stdout.splitlines() if not line.startswith("Jack: ")]


def stop(server: JackServer) -> None:
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def running(prefix: str, log_path: Path, **options) -> Iterator[JackServer]:
    """A ready server named `<prefix>-<pid>-<random>` (options: `start`'s), stopped at the end;
    meanwhile JACK_DEFAULT_SERVER points this process's own clients at it."""
    server = start(f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}", log_path, **options)
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    os.environ.update(JACK_DEFAULT_SERVER=server.name, JACK_NO_START_SERVER="1")
    try:
        wait_ready(server)
        yield server
    finally:
        stop(server)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def jack_missing() -> str | None:
    """Why a private JACK server and its clients cannot run here, or None."""
    if shutil.which("jackd") is None:
        return "jackd is not installed (apt install jackd2)"
    for tool in ("jack_wait", "jack_lsp", "jack_connect"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install jackd2 jack-tools)"
    try:
        import rtmidi  # noqa: F401
    except ImportError as err:
        return f"python-rtmidi cannot be imported ({err})"
    return None
