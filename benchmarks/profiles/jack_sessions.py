"""Sessions the way a user has them, over and over: how many play into silence (issue 13).

    .venv/bin/python -m benchmarks.profiles.jack_sessions [-n 48] [--realtime] [--tty] [--fresh-jack]
        [--poll-ports] [--churn K] [--verbose-jack] [--improv-root DIR] [--model M]

Each session: `improv run --backend jack --clock midi` starts, a player sends MIDI clock at 120 bpm
and one call, improv answers, and SIGTERM stops it. A C recorder (its own process) listens to
improv's output. A session is silent when improv's timing log says it sent note-ons and the
recorder received nothing at all; a lossy jackd loses some events, never all. Prints one line per
session and "silent S of N". tests/test_jack_sessions.py runs 10 of them.

`--poll-ports` looks for improv's ports with jack_lsp from the moment it is spawned (as a patchbay
or a script waiting to wire it does): short-lived JACK clients open and close while improv opens
its own, the condition under which issue 13's stall happens (docs/LIVE.md). `--improv-root` runs
another checkout's improv (its code and models) under this harness, e.g. an old commit. `--churn K`
runs K jack_churn processes (short-lived clients in a loop) from the spawn until improv is wired.
`--verbose-jack` runs jackd -v: every client's libjack then logs its side (clients added and
removed, futexes mapped) into improv's log, which is how issue 13's cause was read.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.harness import jackd
from benchmarks.harness.clients import Churn, ClockSource, Player, Recorder
from benchmarks.harness.improv_process import ImprovProcess
from benchmarks.harness.notes import note_ons

BPM = 120.0
SPB = 60.0 / BPM
CALL = [(i * SPB / 2 + off, [0x90 if off == 0 else 0x80, pitch, 90 if off == 0 else 0])
        for i, pitch in enumerate((60, 62, 64, 67)) for off in (0.0, 0.2)]
ANSWER_WAIT_S = 6.0  # from the call's end: the answer starts a beat or two later
STALLED_LINES = 2000  # "Process error" lines: a stalled graph logs one a cycle (750/s), a normal session tens to hundreds


@dataclass(frozen=True)
class Setup:
    """How a session is run besides the server: the live view on a pty, jack_lsp polled from the
    spawn, another checkout's improv."""

    tty: bool = False
    poll_ports: bool = False
    improv_root: Path | None = None
    churn: int = 0  # jack_churn.c processes from before the spawn until improv is wired


@dataclass(frozen=True)
class Session:
    index: int
    startup_s: float
    sent: int  # note-ons in improv's timing log
    heard: int  # note-ons the recorder received
    received: int  # messages of any kind the recorder received
    reopens: int  # how often improv's output watch reopened the output
    exit_code: int
    graph_errors: int = 0  # jackd's "Process error" lines during the session (a stalled graph: one a cycle)
    start_reopens: int = 0  # outputs the start-up check found never run by JACK and reopened

    @property
    def silent(self) -> bool:
        return self.sent > 0 and self.received == 0


def session(server: jackd.JackServer, model: str | Path, work_dir: Path, index: int = 0,
            setup: Setup = Setup()) -> Session:
    """One session on `server`: start, clock, a call, the answer (or ANSWER_WAIT_S), SIGTERM."""
    tag = uuid.uuid4().hex[:4]
    player, recorder = Player(f"player-{tag}"), Recorder(f"rec-{tag}")
    clock = None
    errors_before = _graph_errors(server)
    churn = Churn(server.env, setup.churn) if setup.churn else None
    improv = ImprovProcess(model, ["--backend", "jack", "--clock", "midi", "--bpm", str(BPM), "--log-level", "info"],
                           server.env, work_dir, timing_log=True, tty=setup.tty, cwd=setup.improv_root)
    try:
        if setup.poll_ports:  # jack_lsp every 50 ms while improv opens its clients
            server.wait_port(":improv in", timeout_s=60)
            server.wait_port(":improv out", timeout_s=60)
        improv.wait_ready(60)
        server.connect(player.port, server.wait_port(":improv in"))
        server.connect(server.wait_port(":improv out"), recorder.port)
        if churn is not None:
            churn.close()
        clock = ClockSource(player, BPM)
        clock.start()
        time.sleep(1.0)  # two beats of clock: the follower knows the tempo
        player.play(CALL, time.perf_counter())
        if recorder.wait_for(lambda m: bool(note_ons(m)), timeout_s=ANSWER_WAIT_S):
            time.sleep(0.5)  # a little of the answer, then the user stops it
    finally:
        if churn is not None:
            churn.close()
        if clock is not None:
            clock.stop()
        exit_code = improv.stop()
        time.sleep(0.2)  # the shutdown's note-offs arrive
        player.close()
        recorder.close()
    return Session(index, improv.startup_s or -1.0, improv.note_ons_sent(settle_s=0.0), len(note_ons(recorder.received)),
                   len(recorder.received), improv.output().count("messages improv sent"), exit_code,
                   _graph_errors(server) - errors_before, improv.output().count("at start-up (JACK"))


def _graph_errors(server: jackd.JackServer) -> int:
    return server.log_path.read_text(errors="replace").count("ProcessGraphAsyncMaster: Process error")


def sessions(n: int, model: str | Path, work_dir: Path, *, realtime: bool = False, setup: Setup = Setup(),
             fresh_jack: bool = False, report=print, verbose_jack: bool = False) -> list[Session]:
    """`n` sessions on one private jackd (or a fresh one each, `fresh_jack`); each reported as it ends."""
    done: list[Session] = []
    server_count = n if fresh_jack else 1
    per_server = 1 if fresh_jack else n
    for s in range(server_count):
        with jackd.running("improv-sessions", work_dir / f"jackd-{s}.log", realtime=realtime,
                           verbose=verbose_jack) as server:
            for _ in range(per_server):
                done.append(session(server, model, work_dir, len(done), setup))
                report(json.dumps({**asdict(done[-1]), "silent": done[-1].silent}))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=48, help="how many sessions")
    parser.add_argument("--model", default="models/bach-lstm")
    parser.add_argument("--realtime", action="store_true", help="jackd --realtime (where allowed)")
    parser.add_argument("--tty", action="store_true", help="improv on a pseudo-terminal, with its live view")
    parser.add_argument("--fresh-jack", action="store_true", help="a new jackd for every session")
    parser.add_argument("--poll-ports", action="store_true",
                        help="look for improv's ports with jack_lsp from its spawn on (short-lived clients during its start-up)")
    parser.add_argument("--churn", type=int, default=0,
                        help="this many jack_churn processes (short-lived JACK clients in a loop) during improv's start-up")
    parser.add_argument("--verbose-jack", action="store_true",
                        help="jackd -v: the server's and every client's libjack log their side (huge)")
    parser.add_argument("--improv-root", type=Path, help="run this checkout's improv (code and models), e.g. an old commit")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="improv-sessions-"))
    setup = Setup(args.tty, args.poll_ports, args.improv_root.resolve() if args.improv_root else None, args.churn)
    done = sessions(args.n, args.model, work_dir, realtime=args.realtime, setup=setup, fresh_jack=args.fresh_jack,
                    verbose_jack=args.verbose_jack)
    silent = sum(s.silent for s in done)
    answered = sum(s.heard > 0 for s in done)
    reopened = sum(s.reopens > 0 for s in done)
    stalled = sum(s.graph_errors >= STALLED_LINES for s in done)
    at_start = sum(s.start_reopens > 0 for s in done)
    print(f"silent {silent} of {len(done)} (answered {answered}, output reopened in {reopened}, at start-up in {at_start}, "
          f"JACK graph stalled in {stalled}); logs in {work_dir}")
    return 1 if silent else 0


if __name__ == "__main__":
    raise SystemExit(main())
