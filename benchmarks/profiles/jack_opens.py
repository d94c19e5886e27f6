"""Issue 13's stall without a whole improv session: a process opens JACK clients the way improv
does at start-up while short-lived clients churn, then sends through "improv out" to a C
recorder and to "improv in"; a trial is dead when the recorder or improv in hears nothing.

    .venv/bin/python -m benchmarks.profiles.jack_opens -n 100 [--seq probe,race3,in,out] [--churn 3]
        [--churn-kind c|lsp] [--hold-ms 0] [--activate] [--main-thread] [--burners 0] [--shared-jack]
        [--realtime]

`--seq` is the child's order of opens: probe (an "improv probe" input opened and closed, as
`ports.choose_backend`), in (virtual input with a Python callback), out (virtual output), monitor
(queue-mode input, the output watch's), graph (the ctypes libjack client of `improv.jack_graph`,
never activated), improv (`improv.serve.open_ports`, what
`improv run` opens, in its order), ports (`improv.ports.open_port` in, then out, nothing between:
c6f84a9's order through improv's opening, which on JACK waits for each client's first cycle and
reopens one JACK never runs), unchecked (from here on, that wait always succeeds), sleepS (seconds), raceN (N clients of another process, open,
each closed at a random moment within RACE_S while the next item opens: the removals libjack
ignores, docs/LIVE.md). rtmidi clients are created on a short-lived thread, as `ports._client`
does, unless `--main-thread`. Churn: `--churn` jack_churn.c processes (`--activate`: each client
activated with a port; `--hold-ms`: each held open so long) or jack_lsp loops (`--churn-kind
lsp`), from before the child's spawn to its end. A fresh jackd per trial unless `--shared-jack`.
Prints one line per trial and "dead D of N". Findings: docs/LIVE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import jackd
from benchmarks.harness.clients import Churn, Recorder, build_c_client

OUT_PORT = "improv out:improv out"
IN_PORT = "improv in:improv in"  # wired from OUT_PORT too: an input JACK never runs hears nothing
SEND_S = 0.6  # the child sends a note-on every 20 ms for this long
CHILD_TIMEOUT_S = 20.0
RACE_CLOSE_S = 3.0  # a racing client's close that takes longer has hung
RACE_S = 0.025  # a process's first jack_client_open takes 15-30 ms here


def _make(cls: Any, name: str, main_thread: bool) -> Any:
    import rtmidi

    if main_thread:
        return cls(rtmidi.API_UNIX_JACK, name)
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.setdefault("c", cls(rtmidi.API_UNIX_JACK, name)), daemon=True)
    worker.start()
    worker.join(5.0)
    return box["c"]


def child(recorder_port: str, seq: list[str], main_thread: bool) -> None:
    """Open `seq` in order, connect improv out to the recorder, send; exits without closing."""
    import faulthandler

    import rtmidi

    from improv.jack_graph import JackGraph

    faulthandler.dump_traceback_later(CHILD_TIMEOUT_S - 2, exit=True)  # a hang shows where it is

    graph, out, keep, stamps, racing, race_hung = None, None, [], {}, None, 0
    midi_in, heard_in = None, []  # improv in, in queue mode (item improv) or with a callback (item in)
    t0 = time.perf_counter()
    for item in seq:
        if item == "probe":
            client = _make(rtmidi.MidiIn, "improv probe", main_thread)
            client.close_port()
            client.delete()
        elif item == "in":
            client = _make(rtmidi.MidiIn, "improv in", main_thread)
            client.open_virtual_port("improv in")
            client.set_callback(lambda message, data=None: heard_in.append(message))
            keep.append(client)
        elif item == "out":
            out = _make(rtmidi.MidiOut, "improv out", main_thread)
            out.open_virtual_port("improv out")
        elif item == "monitor":
            client = _make(rtmidi.MidiIn, "improv watch", main_thread)
            client.ignore_types(sysex=True, timing=False, active_sense=True)
            client.open_virtual_port("improv watch")
            keep.append(client)
        elif item == "graph":
            graph = JackGraph.open()
        elif item.startswith("sleep"):
            time.sleep(float(item[5:]))
        elif item == "improv":
            from improv.serve import open_ports

            graph, in_port, _, out_port = open_ports("jack", None, None)
            keep.append(in_port)
            midi_in, out = in_port.rt, out_port.rt
        elif item == "ports":
            from improv.ports import open_port

            in_port = open_port("in", None, "jack")
            keep.append(in_port)
            midi_in, out = in_port.rt, open_port("out", None, "jack").rt
        elif item == "unchecked":
            from improv.jack_midi import JackMidiClient

            JackMidiClient.wait_running = lambda self, timeout_s: True
        elif item.startswith("race"):
            racing = _Race(int(item[4:] or 1))
            racing.start()
            continue  # its clients close while the next item opens
        else:
            raise SystemExit(f"unknown --seq item {item!r}")
        if racing is not None:
            race_hung += racing.join()
            racing = None
        stamps[item] = round(time.perf_counter() - t0, 3)
    graph = graph or JackGraph.open("opens graph")
    connected = graph.connect(OUT_PORT, recorder_port) and graph.connect(OUT_PORT, IN_PORT)
    sent, end = 0, time.perf_counter() + SEND_S
    while time.perf_counter() < end:
        out.send_message([0x90, 60, 1 + sent % 100])
        sent += 1
        time.sleep(0.02)
    time.sleep(0.1)
    while midi_in is not None and midi_in.get_message() is not None:
        heard_in.append(1)
    print(json.dumps(dict(stamps=stamps, connected=connected, sent=sent, in_heard=len(heard_in),
                          race_close_hung=race_hung)), flush=True)
    os._exit(0)  # how the clients close is not what is measured


class _Race:
    """`count` clients of another process (jack_churn.c "once"), open now; `start` has each close
    at its own random moment within RACE_S (timed in C: an rtmidi open holds the GIL), while the
    caller opens its next client."""

    def __init__(self, count: int) -> None:
        binary, why = build_c_client("jack_churn.c")
        if binary is None:
            raise SystemExit(f"cannot build jack_churn.c: {why}")
        self.holders = [subprocess.Popen([str(binary), "once", str(random.randrange(int(RACE_S * 1e6)))],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                        for _ in range(count)]
        for holder in self.holders:
            if not _line(holder, "ready"):
                raise SystemExit("a racing client did not open")

    def start(self) -> None:
        for holder in self.holders:
            holder.stdin.close()

    def join(self) -> int:
        """Returns once every racing client has closed (the server has freed their numbers), or
        after RACE_CLOSE_S: a close that hangs (it happens under a loaded non-realtime jackd,
        with rtmidi's clients and improv's alike) is killed and counted, not taken for improv's."""
        hung = 0
        for holder in self.holders:
            try:
                holder.wait(timeout=RACE_CLOSE_S)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
                hung += 1
        return hung


def _line(process: subprocess.Popen, wanted: str) -> bool:
    """Read the process's stdout up to the line `wanted` (libjack's verbose chatter may come first)."""
    for line in process.stdout:
        if line.strip() == wanted:
            return True
    return False


class LspChurn:
    """`count` shell loops of jack_lsp, until `close`."""

    def __init__(self, env: dict[str, str], count: int) -> None:
        self._loops = [subprocess.Popen(["bash", "-c", "while :; do jack_lsp >/dev/null 2>&1; done"], env=env,
                                        start_new_session=True) for _ in range(count)]

    def close(self) -> None:
        for loop in self._loops:
            os.killpg(loop.pid, signal.SIGTERM)
            loop.wait(5)


def trial(server: jackd.JackServer, recorder: Recorder, args: argparse.Namespace, index: int) -> dict:
    log_before = len(server.log_path.read_text(errors="replace"))
    churn = (LspChurn(server.env, args.churn) if args.churn_kind == "lsp"
             else Churn(server.env, args.churn, activate=args.activate, hold_ms=args.hold_ms)) if args.churn else None
    heard_before = len(recorder.received)
    cmd = [sys.executable, "-m", "benchmarks.profiles.jack_opens", "--child", recorder.port, "--seq", args.seq]
    try:
        done = subprocess.run(cmd + (["--main-thread"] if args.main_thread else []), env=server.env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        last = (done.stdout.strip().splitlines() or [""])[-1]
        info = (last + " " + done.stderr.strip()[-600:]).strip()
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        (server.log_path.parent / f"child-{index}.err").write_text(stderr)
        last, info = "", f"timeout (its stack: child-{index}.err beside the jackd log)"
    finally:
        if churn is not None:
            churn.close()
    log = server.log_path.read_text(errors="replace")[log_before:]
    try:
        in_heard = json.loads(last).get("in_heard", -1) if last.startswith("{") else -1
    except json.JSONDecodeError:
        in_heard = -1
    heard = len(recorder.received) - heard_before
    return dict(index=index, heard=heard, in_heard=in_heard, dead=heard == 0 or in_heard == 0,
                out_not_finished=log.count("improv out was not finished"),
                graph_errors=log.count("ProcessGraphAsyncMaster: Process error"), child=info[:900])


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="how many trials")
    parser.add_argument("--seq", default="probe,in,graph,out,monitor", help="the child's opens, in order")
    parser.add_argument("--churn", type=int, default=3, help="churning processes (0: none)")
    parser.add_argument("--churn-kind", choices=("c", "lsp"), default="c")
    parser.add_argument("--activate", action="store_true", help="each churn client activated with a port")
    parser.add_argument("--hold-ms", type=int, default=0, help="each churn client held open this long")
    parser.add_argument("--main-thread", action="store_true", help="rtmidi clients created on the child's main thread")
    parser.add_argument("--burners", type=int, default=0, help="busy processes loading the cores meanwhile")
    parser.add_argument("--shared-jack", action="store_true", help="one jackd for all trials")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--child", metavar="RECORDER_PORT", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.child:
        child(args.child, args.seq.split(","), args.main_thread)
    work = Path(tempfile.mkdtemp(prefix="jack-opens-"))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    try:
        silent = _trials(args, work)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    print(f"dead {silent} of {args.n} (nothing from improv out at the recorder, or nothing at improv in; seq {args.seq}, churn {args.churn} x {args.churn_kind}"
          f"{' activated' if args.activate else ''}, held {args.hold_ms} ms{', main thread' if args.main_thread else ''}, "
          f"{args.burners} burners, {'one jackd' if args.shared_jack else 'a fresh jackd each'}); logs in {work}")
    return 1 if silent else 0


def _trials(args: argparse.Namespace, work: Path) -> int:
    silent = 0
    for s in range(1 if args.shared_jack else args.n):
        with jackd.running("jack-opens", work / f"jackd-{s}.log", realtime=args.realtime) as server:
            recorder = Recorder("rec")
            for i in range(args.n if args.shared_jack else 1):
                result = trial(server, recorder, args, s + i)
                silent += result["dead"]
                print(json.dumps(result), flush=True)
            recorder.close()
    return silent


if __name__ == "__main__":
    raise SystemExit(main())
