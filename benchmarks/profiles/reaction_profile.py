"""Where improv's share of a duet reaction goes, and what this machine does to code after a sleep.

    .venv/bin/python -m benchmarks.profiles.reaction_profile [--model bach-lstm] [--notes 150] [--warm-every-ms 0]

No JACK: the real `Daemon` threads and model, single player notes as `improv bench`'s duet stream
plays them; prints when each piece of the engine's work on a note is done (ms from its stamp, p50 /
p99), then small pieces of work timed back to back vs right after a 20-ms sleep. `--warm-every-ms N`
also steps the model on a scratch state every N ms (improv does not). Findings: README, "JACK at 32 frames".
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import defaultdict

import numpy as np

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bach-lstm", help="a model name under models/ or a model folder")
    parser.add_argument("--notes", type=int, default=150, help="player notes (0.25-0.6 s apart)")
    parser.add_argument("--warm-every-ms", type=float, default=0.0, help="keep the model warm (see the docstring)")
    args = parser.parse_args(argv)
    timeline, steps, (prepared, reactions) = reaction_timeline(args.model, args.notes, args.warm_every_ms)
    print(f"{args.model}, duet with thru, {args.notes} notes; ms from the note's stamp, p50 / p99:")
    for label, values in timeline.items():
        print(f"  {label:34s} {np.percentile(values, 50):6.3f} / {np.percentile(values, 99):6.3f}")
    print(f"  model steps in a reaction: p50 {np.percentile(steps, 50):g}, max {max(steps)}; "
          f"{prepared} of {reactions} reactions from the table prepared at the last tick")
    print("after a sleep (us, p50 back to back -> p50 right after 20 ms asleep):")
    for label, (hot, cold, faults) in after_sleep().items():
        print(f"  {label:34s} {hot:7.1f} -> {cold:7.1f}  ({cold / hot:.1f}x; page faults per call {faults:g})")


def reaction_timeline(model_name: str, notes: int, warm_every_ms: float) -> tuple[dict, list[int], tuple[int, int]]:
    """{label: [ms from the stamp, one per note]}, [model steps per reaction], (reactions from
    the prepared table, all reactions)."""
    from improv.clock import MonotonicClock
    from improv.daemon import Daemon
    from improv.serve import SWITCH_INTERVAL_S
    from improv.demo import Recorder
    from improv.engine import Engine
    from improv.midi_in import MidiInput
    from improv.model_step import StepModel
    from improv.settings import load_settings

    model, clock = StepModel.load(model_name), MonotonicClock()
    settings = load_settings(None, {"time.bpm": 120.0, "sampling.seed": 1, "mode.mode": "duet", "output.thru": True})
    engine = Engine(model, settings, clock, Recorder(clock))
    midi_in = MidiInput(None)
    daemon = Daemon(engine, midi_in)
    marks: dict[float, dict[str, float]] = defaultdict(dict)
    steps: list[int] = []
    _instrument(daemon, clock, marks, steps)
    saved = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as the daemon runs
    stop = threading.Event()
    if warm_every_ms > 0:
        threading.Thread(target=_keep_warm, args=(model, warm_every_ms / 1e3, stop), daemon=True).start()
    daemon.start()
    try:
        stamps = _play(midi_in, notes)
    finally:
        stop.set()
        daemon.stop()
        sys.setswitchinterval(saved)
    duet = engine.improviser.duet
    return _timeline(stamps, marks, list(engine.scheduler.records)), steps, (duet.prepared_reactions, duet.reactions)


def _instrument(daemon, clock, marks: dict, steps: list[int]) -> None:
    """Record when each piece of the engine's work on a player's note-on finished."""
    import improv.context
    import improv.duet
    import improv.improviser
    import improv.reaction
    import improv.sampling

    current: list[float | None] = [None]
    owners = {"echo": improv.improviser.Improviser, "replan": improv.duet.Duet,
              "catch_up": improv.context.ModelContext,
              "draw_ready": improv.reaction.Reaction, "choose": improv.reaction.Reaction,
              "sample": improv.sampling.Sampler}
    for name, cls in owners.items():
        setattr(cls, name, _marked(getattr(cls, name), name, clock, marks, current))
    feed, engine_model = daemon.engine.feed_message, daemon.engine.improviser.model

    def feed_message(t_s: float, data: list[int]) -> None:
        note_on = data[0] & 0xF0 == 0x90 and data[2] > 0
        current[0], before = (t_s if note_on else None), engine_model.steps
        if note_on:
            marks[t_s]["engine has it"] = clock.now()
        feed(t_s, data)
        if note_on:
            steps.append(engine_model.steps - before)
        current[0] = None

    daemon.engine.feed_message = feed_message


def _marked(fn, name: str, clock, marks: dict, current: list):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        if current[0] is not None:
            marks[current[0]].setdefault(name, clock.now())
        return result

    return wrapper


def _keep_warm(model, every_s: float, stop: threading.Event) -> None:
    scratch = model.new_state()
    while not stop.wait(every_s):
        model.step(2, scratch)


def _play(midi_in, notes: int) -> list[float]:
    rng, stamps = random.Random(0), []
    for _ in range(notes):
        time.sleep(rng.uniform(0.25, 0.6))
        pitch = rng.randint(36, 47)  # below improv's range: its notes are told apart
        stamps.append(time.perf_counter())
        midi_in.queue.put((stamps[-1], [0x90, pitch, 90]))  # as the rtmidi callback does
        time.sleep(0.1)
        midi_in.queue.put((time.perf_counter(), [0x80, pitch, 0]))
    time.sleep(0.3)
    return stamps


def _timeline(stamps: list[float], marks: dict, records: list) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    labels = {"engine has it": "the engine thread has the note", "echo": "thru echo planned",
              "replan": "re-plan's cut done", "catch_up": "player's tokens stepped (model)",
              "draw_ready": "prepared table consulted",
              "choose": "reaction chosen at the note", "sample": "reaction sampled"}
    for t in stamps:
        for key, label in labels.items():
            if key in marks.get(t, {}):
                out[label].append((marks[t][key] - t) * 1e3)
        for source, label in (("thru", "thru echo sent"), ("duet", "reaction sent")):
            sent = [r.actual_s for r in records if r.source == source and r.message.type == "note_on"
                    and r.message.velocity > 0 and t <= r.actual_s < t + 0.05]
            if sent:
                out[label].append((sent[0] - t) * 1e3)
    return {label: out[label] for label in sorted(out, key=lambda label: np.median(out[label]))}


def after_sleep(sleep_s: float = 0.02, n: int = 60) -> dict[str, tuple[float, float, float]]:
    """{work: (p50 us back to back, p50 us right after `sleep_s` asleep, page faults per call)}."""
    import resource

    work = {"onnxruntime: 60 Gemms 8x8 (15 KB)": _tiny_onnx(), "numpy: 50 matvecs 64x64": _numpy_work(),
            "Python: a 2000-iteration loop": _python_work}
    out = {}
    for label, fn in work.items():
        for _ in range(200):
            fn()
        hot, cold = [], []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            hot.append(time.perf_counter() - t0)
            time.sleep(sleep_s)
            t0 = time.perf_counter()
            fn()
            cold.append(time.perf_counter() - t0)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (2 * n)
        out[label] = (float(np.median(hot)) * 1e6, float(np.median(cold)) * 1e6, faults)
    return out


def _tiny_onnx(nodes: int = 60, width: int = 8):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from improv.model_step import session_options

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.normal(size=(width, width)) * 0.1).astype(np.float32), f"w{i}")
             for i in range(nodes)]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x" if i == 0 else f"y{i - 1}", f"w{i}"], [f"y{i}"]) for i in range(nodes)],
        "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(f"y{nodes - 1}", TensorProto.FLOAT, [1, width])], inits)
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    x = np.zeros((1, width), dtype=np.float32)
    return lambda: session.run(None, {"x": x})


def _numpy_work():
    rng = np.random.default_rng(0)
    a, v = rng.random((64, 64), dtype=np.float32), rng.random(64, dtype=np.float32)

    def fn() -> None:
        for _ in range(50):
            v @ a

    return fn


def _python_work() -> int:
    total = 0
    for i in range(2000):
        total += i
    return total


if __name__ == "__main__":
    main()
