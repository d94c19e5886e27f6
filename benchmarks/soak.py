"""A long performance over real JACK ports: is improv's worst minute as good as its first?

A player client plays on improv's beat grid for `--minutes`: 16th-note chords at `--rate` note
events per second (note-ons and note-offs) in 4-beat phrases. Every `--window` (a minute) is the
same script: call and response - gaps that alternate between long (the answer plays out) and short
(the next phrase interrupts it) - then a duet (CC 22 switches the mode, as a knob would). The
daemon's resident memory is sampled from /proc every few seconds, and `improv run --timing-log`
records when each message was planned and when it went out. At the end (after a quiet tail,
before improv is stopped) the figures:

* note events the player sent and JACK delivered (a loop-back recorder), and improv's (its timing
  log and a recorder on its output); stuck notes on each side (a note-on with no note-off). What
  each side SENT decides: a non-realtime jackd on a busy machine drops or garbles an event now and
  then for a client that missed its cycle (see the JACK line), which the receivers' figures show;
  and once improv has stopped, nothing may sound at its recorder (its shutdown's All Notes Off
  ends what a lost note-off left on);
* crashes: improv alive throughout, engine/model errors logged, exit code on SIGTERM;
* RSS after the warm-up, at the end, growth in %;
* output timing (actual - planned of improv's scheduled notes) p50 / p99 / max over the first and
  the last window, per source (the answers and the duet), and each window's p99.

    python -m benchmarks.soak --minutes 10 --rate 50 --json soak.json [--model models/bach-lstm]

starts a private jackd (dummy driver, 64-frame periods, benchmarks.harness.jackd);
tests/test_soak.py runs a one-minute one on the test session's server with the same verdict
(`SoakResult.problems`). Exit code 0 when it passes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.harness import jackd
from benchmarks.harness.clients import Player, Recorder, sleep_until
from benchmarks.harness.improv_process import ImprovProcess
from benchmarks.harness.notes import note_events, sounding, sounding_in_log
from improv.timing_log import TimingRow, read_timing_log

REPO = Path(__file__).resolve().parent.parent
MODE_CC = 22  # improv's default CC for call (< 64) / duet (>= 64)
SCALE = (0, 2, 4, 5, 7, 9, 11)


@dataclass(frozen=True)
class SoakOptions:
    seconds: float = 600.0
    rate_hz: float = 50.0  # note events per second while the player plays
    warmup_s: float = 60.0  # RSS growth is measured from here
    window_s: float = 60.0  # output timing: the first and the last window of this length
    bpm: float = 120.0
    seed: int = 1
    sample_s: float = 2.0  # RSS sampling period
    tail_beats: float = 14.0  # silence at the end: the last answer plays out
    duet_share: float = 0.5  # of each window, the part played in duet mode (the rest call and response)


@dataclass
class SoakResult:
    options: dict
    model: str
    duration_s: float = 0.0
    player: dict = field(default_factory=dict)
    improv: dict = field(default_factory=dict)
    rss_mb: dict = field(default_factory=dict)
    timing_ms: dict = field(default_factory=dict)
    jack: str = ""

    def problems(self, max_growth_pct: float = 5.0, p99_slack: tuple[float, float] = (1.0, 1.0),
                 min_count: int = 20) -> list[str]:
        """What fails the soak: stuck notes in what either side sent, a note still sounding at
        improv's recorder after it stopped, crashes, memory growth, later timing worse than early.
        Timing drift is judged on the answers (call mode: prepared during the silence, so their
        lateness is the daemon's own); the duet's figures are reported (its
        notes after each re-plan are late by design today, see tests/test_soak.py). `p99_slack`
        (factor, ms): the last window's p99 may be at most factor * first + ms (by default 1 ms of
        measurement noise, under one 1.33 ms JACK period); `min_count` sends per window at least."""
        out = []
        for side, figures in (("player", self.player), ("improv", self.improv)):
            if figures.get("stuck_sent") != 0:
                out.append(f"{side}: {figures.get('stuck_sent')} stuck notes in what it sent")
        if self.improv.get("sounding_after_stop"):
            out.append(f"improv: {self.improv['sounding_after_stop']} notes still sounding at its recorder "
                       "after it stopped")
        if not self.improv.get("alive_throughout") or self.improv.get("exit_code") != 0:
            out.append(f"improv crashed or exited with {self.improv.get('exit_code')}")
        if self.improv.get("errors"):
            out.append(f"improv logged {self.improv['errors']} errors")
        if not self.improv.get("note_ons"):
            out.append("improv never answered")
        growth = self.rss_mb.get("growth_pct")
        if growth is None or growth >= max_growth_pct:
            out.append(f"RSS grew {growth}% after the warm-up (limit {max_growth_pct}%)")
        first = self.timing_ms.get("first", {}).get("response", {})
        last = self.timing_ms.get("last", {}).get("response", {})
        factor, extra = p99_slack
        if first.get("count", 0) < min_count or last.get("count", 0) < min_count:
            out.append(f"too few answer notes to compare timing ({first.get('count', 0)} first, "
                       f"{last.get('count', 0)} last; {min_count} wanted)")
        elif last["p99"] > factor * first["p99"] + extra:
            out.append(f"answer timing p99 {last['p99']:.3f} ms in the last window vs {first['p99']:.3f} ms "
                       "in the first")
        return out


# --------------------------------------------------------------------------- the performance


def performance(opts: SoakOptions, spb: float) -> tuple[list[tuple[float, list[int]]], dict]:
    """(offset_s, message) for the whole run, on a beat grid from 0, and what it amounts to.

    Every `window_s` is the same script - call and response, then duet for `duet_share` of it - so
    the first and the last window measure the same kind of work. The player plays for `seconds`
    (ending in call mode, which releases the duet), then leaves `tail_beats` of silence. After
    each phrase it releases the phrase's pitches once more: a release of a key that is up changes
    nothing in improv, and a release a busy non-realtime jackd lost on the way is made good, so a
    lost event never holds a key down for the rest of the run.
    """
    rng = np.random.default_rng(opts.seed)
    step = spb / 4  # 16th notes
    chord = max(1, round(opts.rate_hz / 2 * step))
    lengths = (opts.window_s * (1 - opts.duet_share), opts.window_s * opts.duet_share)  # call, duet
    msgs: list[tuple[float, list[int]]] = []
    playing_s, t_seg, segment, sweeps = 0.0, 0.0, 0, 0
    while t_seg < opts.seconds - 1e-9:
        duet = segment % 2 == 1
        seg_end = min(opts.seconds, t_seg + max(lengths[duet], 6 * spb))
        if segment:
            msgs.append((t_seg, [0xB0, MODE_CC, 127 if duet else 0]))
        beat, long_gap = t_seg / spb, True
        while (beat + 4) * spb <= seg_end + 1e-9:
            used: set[int] = set()
            for k in range(16):  # one 4-beat phrase of 16th-note chords
                t = beat * spb + k * step
                pitches = _chord(rng, chord)
                used.update(pitches)
                msgs += [(t, [0x90, p, int(rng.integers(60, 110))]) for p in pitches]
                msgs += [(t + 0.75 * step, [0x80, p, 0]) for p in pitches]
            msgs += [((beat + 4) * spb - 0.25 * step, [0x80, p, 0]) for p in sorted(used)]  # the sweep
            sweeps += len(used)
            playing_s += 4 * spb
            beat += 4 + (1.0 if duet else (7.0 if long_gap else 2.5))  # long gap: the answer plays out
            long_gap = not long_gap
        t_seg, segment = seg_end, segment + 1
    if segment % 2 == 0:  # the last segment was a duet: back to call mode releases it
        msgs.append((opts.seconds, [0xB0, MODE_CC, 0]))
    msgs.sort(key=lambda m: m[0])
    events = sum(1 for _, m in msgs if m[0] & 0xE0 == 0x80)
    played = events - sweeps  # the notes' own ons and offs
    return msgs, {"note_events": events, "sweep_note_offs": sweeps, "playing_s": playing_s, "chord": chord,
                  "rate_while_playing_hz": played / playing_s if playing_s else 0.0}


def _chord(rng: np.random.Generator, size: int) -> list[int]:
    pool = [12 * octave + pc for octave in range(4, 7) for pc in SCALE if 48 <= 12 * octave + pc <= 84]
    return sorted(int(p) for p in rng.choice(pool, size=min(size, len(pool)), replace=False))


# --------------------------------------------------------------------------- running it


def run_soak(server, model: Path | str, opts: SoakOptions, work: Path, progress=print) -> SoakResult:
    """Play for `opts.seconds` against `improv run` on `server` (a benchmarks.harness.jackd.JackServer)."""
    work.mkdir(parents=True, exist_ok=True)
    result = SoakResult(asdict(opts), str(model))
    tag = uuid.uuid4().hex[:4]
    player, rec, loop = Player(f"soak-player-{tag}"), Recorder(f"soak-out-{tag}"), Recorder(f"soak-loop-{tag}")
    improv = None
    try:
        improv = ImprovProcess.started(model, ["--backend", "jack", "--bpm", f"{opts.bpm:g}", "--seed", str(opts.seed),
                                                "--range", "36-96"], server.env, work, timing_log=True, timeout_s=90.0)
        server.connect(player.port, server.wait_port(":improv in"))
        server.connect(server.wait_port(":improv out"), rec.port)
        server.connect(player.port, loop.port)
        time.sleep(0.2)
        spb = 60.0 / improv.info["bpm"]
        msgs, shape = performance(opts, spb)
        origin = improv.info["beat_origin_s"]
        start = origin + math.ceil((time.perf_counter() + 0.5 - origin) / spb) * spb
        progress(f"soak: {opts.seconds:g} s, {shape['note_events']} note events "
                 f"({shape['rate_while_playing_hz']:.0f}/s while playing, chords of {shape['chord']}), model {model}")
        thread = threading.Thread(target=_play, args=(player, msgs, start), daemon=True)
        thread.start()
        end = start + opts.seconds + opts.tail_beats * spb  # after the playing, a quiet tail
        samples, alive = _sample(improv, start, end, opts, progress)
        thread.join(timeout=30)
        sleep_until(end)
        time.sleep(0.3)  # the last JACK periods deliver
        result.duration_s = time.perf_counter() - start
        sent_stuck, received_stuck = len(sounding(player.sent)), len(sounding(loop.received))
        out_received = list(rec.received)
        for name, messages in (("player-sent", player.sent), ("player-delivered", loop.received),
                               ("improv-received", out_received)):  # for a look afterwards
            (work / f"{name}.jsonl").write_text("".join(json.dumps([t, m]) + "\n" for t, m in messages))
        stop_s = time.perf_counter()  # what improv sent before this counts; its shutdown panic not
        code = improv.stop(timeout_s=20.0)
        time.sleep(0.3)  # its shutdown's note-offs and All Notes Off arrive
        after_stop = len(sounding(rec.received))
        log_text = improv.output()
        result.player = {"note_events_sent": note_events(player.sent),
                         "note_events_delivered": note_events(loop.received),
                         "stuck_sent": sent_stuck, "stuck_received": received_stuck, **shape,
                         "rate_average_hz": (shape["note_events"] - shape["sweep_note_offs"]) / opts.seconds}
        records = read_timing_log(improv.timing_path)
        result.improv = {"note_events_sent": sum(1 for r in records if r.kind in ("note_on", "note_off")),
                         "note_ons": sum(1 for r in records if r.kind == "note_on"),
                         "note_events_received": note_events(out_received),
                         "stuck_sent": len(sounding_in_log(records, before_s=stop_s)),
                         "stuck_received": len(sounding(out_received)), "sounding_after_stop": after_stop,
                         "dropped_late": log_text.count("dropped a "),
                         "responses": max((int(n) for n in re.findall(r"(\d+) responses", log_text)), default=0),
                         "duet_played": "duet: duet mode" in log_text,
                         "errors": sum(1 for line in log_text.splitlines() if ": ERROR:" in line),
                         "tracebacks": log_text.count("Traceback"),
                         "alive_throughout": alive, "exit_code": code}
        result.rss_mb = _rss_figures(samples, start, opts.warmup_s)
        result.timing_ms = _timing_figures(records, start, opts.seconds, opts.window_s)
        result.jack = server.xruns()
        (work / "soak.json").write_text(json.dumps(asdict(result), indent=1))  # before any teardown
    finally:
        if improv is not None:
            improv.stop(timeout_s=20.0)
        for client in (player, rec, loop):
            client.close()
    return result


def _play(player, msgs, start: float) -> None:
    for offset, data in msgs:
        sleep_until(start + offset)
        player.send(data)


def _sample(improv: ImprovProcess, start: float, end: float, opts: SoakOptions,
            progress) -> tuple[list[tuple[float, float]], bool]:
    """(seconds from start, RSS MB) every `sample_s` until `end`; and whether improv stayed alive."""
    samples: list[tuple[float, float]] = []
    k, alive, next_note = 0, True, start + 60.0
    while True:
        due = start + k * opts.sample_s
        if due > end:
            return samples, alive
        time.sleep(max(0.0, due - time.perf_counter()))
        k += 1
        rss = improv.rss_mb()
        if improv.proc.poll() is not None or rss is None:
            return samples, False
        samples.append((due - start, rss))
        if due >= next_note:
            next_note += 60.0
            progress(f"soak: {due - start:5.0f} s, RSS {rss:.1f} MB")


def _rss_figures(samples: list[tuple[float, float]], start: float, warmup_s: float) -> dict:
    if not samples:
        return {"growth_pct": None}
    warm = next((mb for t, mb in samples if t >= warmup_s), samples[-1][1])
    end = samples[-1][1]
    return {"warm": round(warm, 2), "end": round(end, 2), "max": round(max(mb for _, mb in samples), 2),
            "growth_pct": round(100.0 * (end - warm) / warm, 2), "warmup_s": warmup_s,
            "samples": [(round(t, 1), round(mb, 2)) for t, mb in samples]}


def _scheduled(row: TimingRow) -> bool:
    """A note-on the scheduler sent at its due time. (Note-offs include the releases of cancel
    and panic, recorded when they happen; on a sample-accurate port an on-time send is recorded
    at its due time too, so planned = actual no longer tells them apart.)"""
    return row.source != "panic" and row.kind == "note_on"


def _timing_figures(records: list[TimingRow], start: float, seconds: float, window_s: float) -> dict:
    """Lateness of improv's scheduled notes (actual - planned, ms) in the first and the last
    window of the playing, all together and per source; and each window's p99 along the way."""
    def stats(rows: list[TimingRow]) -> dict:
        late = np.array([(r.actual_s - r.planned_s) * 1000 for r in rows])
        if not len(late):
            return {"count": 0}
        return {"count": int(len(late)), "p50": round(float(np.percentile(late, 50)), 4),
                "p99": round(float(np.percentile(late, 99)), 4), "max": round(float(late.max()), 4)}

    def window(lo: float, hi: float) -> dict:
        rows = [r for r in records if _scheduled(r) and lo <= r.planned_s < hi]
        by_source = {src: stats([r for r in rows if r.source == src]) for src in ("response", "duet")}
        return {**stats(rows), **by_source}

    n = max(1, int(seconds // window_s))
    windows = [window(start + k * window_s, start + (k + 1) * window_s) for k in range(n)]
    return {"window_s": window_s, "first": windows[0], "last": windows[-1],
            "all": window(start, start + seconds + 60.0),
            "p99_by_window": [w.get("p99") for w in windows],
            "answer_p99_by_window": [w["response"].get("p99") for w in windows],
            "duet_p99_by_window": [w["duet"].get("p99") for w in windows]}


# --------------------------------------------------------------------------- the command


def report(result: SoakResult) -> str:
    p, i, r, t = result.player, result.improv, result.rss_mb, result.timing_ms
    lines = [
        f"duration {result.duration_s:.1f} s, model {result.model}",
        f"player: {p['note_events_sent']} note events sent ({p['rate_while_playing_hz']:.1f}/s while playing, "
        f"{p['rate_average_hz']:.1f}/s average, plus {p['sweep_note_offs']} releases after the phrases), "
        f"{p['note_events_delivered']} delivered; stuck notes: "
        f"{p['stuck_sent']} in what it sent, {p['stuck_received']} in what arrived",
        f"improv: {i['note_events_sent']} note events sent ({i['note_ons']} note-ons, {i['responses']} answers, "
        f"duet {'yes' if i['duet_played'] else 'no'}), {i['note_events_received']} received; stuck notes: "
        f"{i['stuck_sent']} in what it sent, {i['stuck_received']} in what arrived, "
        f"{i['sounding_after_stop']} sounding after it stopped; {i['dropped_late']} late "
        f"note-ons dropped, {i['errors']} errors, {i['tracebacks']} tracebacks, alive {i['alive_throughout']}, "
        f"exit {i['exit_code']}",
        f"RSS: {r.get('warm')} MB after {r.get('warmup_s')} s warm-up, {r.get('end')} MB at the end "
        f"(max {r.get('max')}), growth {r.get('growth_pct')} %",
    ]
    for name in ("first", "last", "all"):
        w = t.get(name, {})
        if w.get("count"):
            parts = [f"{src} p99 {w[src]['p99']:.3f} ms ({w[src]['count']})" for src in ("response", "duet")
                     if w.get(src, {}).get("count")]
            lines.append(f"timing {name:5s} ({w['count']:5d} notes): p50 {w['p50']:.3f} ms, p99 {w['p99']:.3f} ms, "
                         f"max {w['max']:.3f} ms; " + ", ".join(parts))
    if t.get("answer_p99_by_window"):
        fmt = lambda xs: " ".join("-" if x is None else f"{x:.2f}" for x in xs)  # noqa: E731
        lines.append(f"p99 per {t['window_s']:g} s window, answers: {fmt(t['answer_p99_by_window'])}; "
                     f"duet: {fmt(t['duet_p99_by_window'])}")
    lines.append(f"JACK: {result.jack}")
    problems = result.problems()
    lines.append("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="How long the player plays.")
    parser.add_argument("--rate", type=float, default=50.0, help="Note events per second while playing.")
    parser.add_argument("--warmup", type=float, default=60.0, help="Seconds before RSS growth is measured.")
    parser.add_argument("--window", type=float, default=60.0, help="Seconds of the first and last timing windows.")
    parser.add_argument("--model", default=None, help="Model folder or name (default: models/bach-lstm).")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="Write the figures here as JSON.")
    parser.add_argument("--work", type=Path, default=None, help="Keep the logs here (default: a temp folder).")
    args = parser.parse_args(argv)
    import tempfile

    model = args.model or str(REPO / "models" / "bach-lstm")
    opts = SoakOptions(seconds=60 * args.minutes, rate_hz=args.rate, warmup_s=args.warmup, window_s=args.window,
                       bpm=args.bpm, seed=args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="improv-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    with jackd.running("improv-soak", work / "jackd.log") as server:
        result = run_soak(server, model, opts, work, progress=lambda s: print(s, flush=True))
    print(report(result), flush=True)
    print(f"logs in {work}")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 0 if not result.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
