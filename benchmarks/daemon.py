"""The daemon's cost: `improv run` as a subprocess (benchmarks.harness.improv_process), measured
from outside through /proc.

* start-up: spawn -> the `--ready-file` appearing (perf_counter in this process, polled every 5 ms
  with sleeps), the whole of it: interpreter start, imports, model load, ports opened;
* resident memory: VmRSS (and the peak VmHWM) from /proc/PID/status, in MB (10^6 bytes);
* CPU: utime + stime from /proc/PID/stat (all threads; 1/CLK_TCK resolution) over a window, as % of
  one core, while idle (no input) and while answering a stream of calls.

`improv.bench` runs these on the call-and-response daemon of the MIDI section (JACK, the last
period). Without jackd, `standalone` starts the daemon on the platform's default MIDI backend
(virtual ports) for start-up, memory and idle CPU; CPU while responding then needs JACK.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness.improv_process import DaemonError, ImprovProcess
from benchmarks.report import Report


class CpuWindow:
    """CPU % of one core used by `daemon` between `with` entry and exit (a sleep or a stream)."""

    def __init__(self, daemon: ImprovProcess) -> None:
        self.daemon = daemon
        self.percent: float | None = None

    def __enter__(self) -> CpuWindow:
        self._cpu0, self._t0 = self.daemon.cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            cpu, t = self.daemon.cpu_s(), time.perf_counter()
            self.percent = 100.0 * (cpu - self._cpu0) / max(t - self._t0, 1e-9)


@dataclass
class Costs:
    """What the daemons started by one bench run cost; `write` puts it into the report."""

    startups_s: list[float] = field(default_factory=list)
    self_reported_s: list[float] = field(default_factory=list)
    rss_ready_mb: float | None = None
    rss_mb: float | None = None  # after answering
    shmem_mb: float | None = None  # of rss_mb: shared memory (under JACK mostly its /dev/shm buffers)
    own_mb: float | None = None  # of rss_mb: improv's own pages (RssAnon + RssFile), on any MIDI backend
    peak_mb: float | None = None
    idle_pct: float | None = None
    idle_s: float = 0.0
    busy_pct: float | None = None
    busy_s: float = 0.0
    why: dict[str, str] = field(default_factory=dict)

    def started(self, daemon: ImprovProcess) -> None:
        self.startups_s.append(daemon.startup_s)
        if isinstance(daemon.info.get("startup_s"), (int, float)):
            self.self_reported_s.append(float(daemon.info["startup_s"]))

    def write(self, report: Report) -> None:
        ups = self.startups_s
        why = self.why.get("startup", "no daemon was started")
        report.put("daemon.startup_s", statistics.median(ups) if ups else None,
                   f"start-up, spawn -> ready file (median of {len(ups)})", "s", why=why)
        report.put("daemon.startup_max_s", max(ups) if ups else None, "start-up, slowest", "s", why=why)
        report.put("daemon.startup_self_s", statistics.median(self.self_reported_s) if self.self_reported_s else None,
                   "start-up as the daemon reports it (process age)", "s", why=why)
        mem_why = self.why.get("memory", why)
        report.put("daemon.rss_ready_mb", self.rss_ready_mb, "resident memory at ready (VmRSS)", "MB", why=mem_why)
        report.put("daemon.rss_mb", self.rss_mb, "resident memory after the last window (VmRSS)", "MB", why=mem_why)
        report.put("daemon.rss_shmem_mb", self.shmem_mb, "of which shared memory (RssShmem: JACK's /dev/shm)",
                   "MB", why=mem_why)
        report.put("daemon.rss_own_mb", self.own_mb, "of which improv's own pages (RssAnon + RssFile)",
                   "MB", why=mem_why)
        report.put("daemon.rss_peak_mb", self.peak_mb, "resident memory peak (VmHWM)", "MB", why=mem_why)
        over = lambda pct, s: f", over {s:g} s" if pct is not None else ""  # noqa: E731
        report.put("daemon.cpu_idle_pct", self.idle_pct, f"CPU idle{over(self.idle_pct, self.idle_s)}", "% of a core",
                   why=self.why.get("idle", why))
        report.put("daemon.cpu_responding_pct", self.busy_pct, f"CPU answering calls{over(self.busy_pct, self.busy_s)}",
                   "% of a core", why=self.why.get("busy", why))


def measure_memory(daemon: ImprovProcess, costs: Costs) -> None:
    mb = daemon.memory_fields_mb("VmRSS", "VmHWM", "RssShmem", "RssAnon", "RssFile")  # one moment
    costs.rss_mb, costs.peak_mb, costs.shmem_mb = mb["VmRSS"], mb["VmHWM"], mb["RssShmem"]
    costs.own_mb = mb["RssAnon"] + mb["RssFile"]


def measure_idle(daemon: ImprovProcess, costs: Costs, idle_s: float) -> None:
    costs.rss_ready_mb = daemon.memory_fields_mb("VmRSS")["VmRSS"]
    with CpuWindow(daemon) as window:
        time.sleep(idle_s)
    costs.idle_pct, costs.idle_s = window.percent, idle_s


def standalone(report: Report, model: Path, work_dir: Path, idle_s: float, why_no_player: str,
               env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
    """Start-up, memory and idle CPU with no player (so no CPU while responding); by default on the
    platform's default MIDI backend with virtual ports."""
    costs = Costs()
    daemon = ImprovProcess(model, list(args or []), dict(env or os.environ), work_dir)
    try:
        daemon.wait_ready()
        costs.started(daemon)
        measure_idle(daemon, costs, idle_s)
        measure_memory(daemon, costs)
    except (DaemonError, OSError) as err:
        costs.why["startup"] = f"the daemon did not start ({why_no_player}): {err}"
    finally:
        daemon.stop()
    costs.why["busy"] = f"needs a player on real ports: {why_no_player}"
    costs.write(report)
    backend = " ".join(args or []) or "the default MIDI backend"
    report.note("daemon.note", f"{model.name} on {backend}, virtual ports, no player (idle only); CPU and "
                               "memory from /proc")
