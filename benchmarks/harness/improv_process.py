"""`improv run` as a subprocess, seen from outside: its ready file, its timing log, /proc.

`python -m improv.cli run --model M --quiet --ready-file R [--timing-log T] ARGS`, its output in a
log file; start-up = spawn -> the ready file appearing (polled every 5 ms with sleeps); the beat
grid it publishes there; resident memory and CPU from /proc/PID; stopped with a signal (SIGTERM:
improv releases every note and exits 0). With `tty=True` it runs on a pseudo-terminal with its live
view (no --quiet), the terminal's output copied into the log file. `cwd` runs another checkout's
improv (`python -m` imports from the working directory first), e.g. an old commit under today's
harness. The user's own IMPROV_* settings are cleared, so they never change what is measured.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from improv.timing_log import TimingRow, read_timing_log

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
POLL_S = 0.005
CLEARED_ENV = ("IMPROV_CONFIG", "IMPROV_IN", "IMPROV_OUT", "IMPROV_BACKEND", "IMPROV_MODEL", "IMPROV_VERBOSE",
               "IMPROV_LOG_LEVEL")


class DaemonError(RuntimeError):
    """`improv run` did not start or died; the message carries its last output line."""


class ImprovProcess:
    """One `improv run`; `timing_log` (True: a fresh file in `work_dir`) adds `--timing-log`;
    a list of models is passed as `--models`; `cwd`: the checkout whose improv runs (default: ours)."""

    def __init__(self, model: Path | str | list, args: list[str], env: dict[str, str], work_dir: Path,
                 timing_log: bool | Path = False, tty: bool = False, cwd: Path | None = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ready_path = work_dir / f"ready-{tag}.json"
        self.log_path = work_dir / f"improv-{tag}.log"
        self.timing_path = work_dir / f"timing-{tag}.csv" if timing_log is True else (timing_log or None)
        chosen = ["--models", ",".join(map(str, model))] if isinstance(model, (list, tuple)) \
            else ["--model", str(model)]
        self.cmd = [sys.executable, "-m", "improv.cli", "run", *chosen, "--quiet",
                    "--ready-file", str(self.ready_path), *args]
        if self.timing_path is not None:
            self.cmd += ["--timing-log", str(self.timing_path)]
        env = {k: v for k, v in env.items() if k not in CLEARED_ENV}
        self.cwd = cwd
        if tty:
            self.cmd.remove("--quiet")
            self._spawn_on_tty(dict(env, TERM="xterm-256color", COLUMNS="120", LINES="40"))
        else:
            with open(self.log_path, "w") as log:
                self.t_spawn = time.perf_counter()
                self.proc = subprocess.Popen(self.cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.cwd)
        self.startup_s: float | None = None
        self.info: dict = {}

    def _spawn_on_tty(self, env: dict[str, str]) -> None:
        import pty

        controller, terminal = pty.openpty()
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                                     start_new_session=True, cwd=self.cwd)
        os.close(terminal)

        def copy() -> None:  # until the process closes its end
            with open(self.log_path, "wb") as log:
                while True:
                    try:
                        chunk = os.read(controller, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    log.write(chunk)
                    log.flush()
            os.close(controller)

        threading.Thread(target=copy, name="improv-tty", daemon=True).start()

    @classmethod
    def started(cls, *args, timeout_s: float = 60.0, **kwargs) -> ImprovProcess:
        """Spawned and ready (`__init__`'s arguments); stopped again if it never gets ready."""
        process = cls(*args, **kwargs)
        try:
            process.wait_ready(timeout_s)
        except DaemonError:
            process.stop()
            raise
        return process

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> dict:
        deadline = self.t_spawn + timeout_s
        while time.perf_counter() < deadline:
            if self.ready_path.exists():
                self.startup_s = time.perf_counter() - self.t_spawn
                self.info = json.loads(self.ready_path.read_text())
                return self.info
            if self.proc.poll() is not None:
                raise DaemonError(f"improv run exited ({self.proc.returncode}): {self.last_line()}")
            time.sleep(POLL_S)
        raise DaemonError(f"improv run not ready after {timeout_s:g} s: {self.last_line()}")

    # ------------------------------------------------------------------ the grid it published

    def beat_time(self, k: float) -> float:
        """Beat k of the grid in the ready file (perf_counter seconds)."""
        return self.info["beat_origin_s"] + k * 60.0 / self.info["bpm"]

    def next_beat(self, t_s: float) -> int:
        """The first beat of that grid at or after `t_s`."""
        return math.ceil((t_s - self.info["beat_origin_s"]) * self.info["bpm"] / 60.0)

    # ------------------------------------------------------------------ what it said and sent

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_line(self) -> str:
        lines = [line for line in self.output().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def sent(self, settle_s: float = 0.0) -> list[TimingRow]:
        """What its scheduler sent so far, from the timing log (written a few times a second:
        `settle_s` waits for the latest first)."""
        time.sleep(settle_s)
        if self.timing_path is None or not self.timing_path.exists():
            return []
        return read_timing_log(self.timing_path)

    def note_ons_sent(self, settle_s: float = 0.3) -> int:
        """How many note-ons its timing log says it sent (0 without a timing log)."""
        return sum(1 for row in self.sent(settle_s) if row.kind == "note_on")

    # ------------------------------------------------------------------ /proc

    def memory_fields_mb(self, *field_names: str) -> dict[str, float]:
        """The named /proc/PID/status memory fields (MB = 10^6 bytes), from one read of the file."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in field_names:
                values[key] = int(rest.split()[0]) * 1024 / 1e6  # kB (KiB) -> MB
        missing = [name for name in field_names if name not in values]
        if missing:
            raise DaemonError(f"/proc/{self.pid}/status has no {', '.join(missing)}")
        return values

    def rss_mb(self) -> float | None:
        """VmRSS in MB, or None once the process is gone."""
        try:
            return self.memory_fields_mb("VmRSS")["VmRSS"]
        except (OSError, DaemonError):
            return None

    def cpu_s(self) -> float:
        """utime + stime of all its threads (1/CLK_TCK resolution)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Signal it and wait; killed if it ignores the signal. Returns the exit code (-9: killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
