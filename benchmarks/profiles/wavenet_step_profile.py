"""Where a cached WaveNet step goes, before and after the folded step graph and the IO-bound runtime.

    python -m benchmarks.profiles.wavenet_step_profile --checkpoint runs/bach-wavenet/best.pt \
        [--lstm-checkpoint runs/bach-lstm/best.pt] [--steps 2000] [--rounds 20] [--naive] [--ort-profile] \
        [--session-options]

Without a checkpoint a random model of the production size is built. Prints the step graph's node
counts (exported and after onnxruntime's optimisations) and per-step p50 / p99 / mean, every variant
interleaved in one process; `--naive` adds the naive / cached ratios, `--ort-profile` onnxruntime's
profiler per op type, `--session-options` the folded graph under other session options.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

PRODUCTION = {"channels": 64, "skip_channels": 128, "dilation_cycle": 7, "stacks": 2, "dropout": 0.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="WaveNet training checkpoint (*.pt)")
    parser.add_argument("--lstm-checkpoint", type=Path, default=None, help="LSTM checkpoint; default runs/accept-lstm/best.pt or a random 2x256 LSTM")
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per variant (after warm-up)")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved blocks: steps / rounds per block")
    parser.add_argument("--naive", action="store_true", help="also time the naive window recompute (256, receptive field)")
    parser.add_argument("--naive-steps", type=int, default=300)
    parser.add_argument("--ort-profile", action="store_true", help="run onnxruntime's profiler on both graphs")
    parser.add_argument("--session-options", action="store_true",
                        help="also time the folded graph under other session options (spinning on, 2 threads)")
    parser.add_argument("--keep", type=Path, default=None, help="write the exported folders here instead of a temp dir")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="wavenet-step-profile."))
    work.mkdir(parents=True, exist_ok=True)
    wavenet_ckpt = _checkpoint("wavenet", args.checkpoint, work)
    lstm_ckpt = _checkpoint("lstm", args.lstm_checkpoint or Path("runs/accept-lstm/best.pt"), work)
    print(f"wavenet checkpoint: {wavenet_ckpt}\nlstm checkpoint:    {lstm_ckpt}\nwork folder: {work}")

    from improv.model_step import StepModel
    from training.checkpoint import load_checkpoint, model_from_checkpoint
    from training.export import export_checkpoint

    after = export_checkpoint(wavenet_ckpt, work / "wavenet-folded", baseline=False)
    print(f"folded export: parity max |dlogit| {after.max_abs_diff:.2e} over {after.tokens} tokens ({after.source}), "
          f"{after.onnx_bytes / 2**20:.2f} MiB")
    net, _ = model_from_checkpoint(load_checkpoint(wavenet_ckpt))
    before_dir = _export_reference(net, work / "wavenet-folded", work / "wavenet-reference")
    lstm_dir = work / "lstm"
    export_checkpoint(lstm_ckpt, lstm_dir, baseline=False)

    print("\nstep graph nodes (exported -> after onnxruntime ORT_ENABLE_ALL):")
    for label, folder in (("wavenet before", before_dir), ("wavenet after", after.folder), ("lstm", lstm_dir)):
        raw, opt = node_counts(folder / "model.onnx")
        per_layer = f"({sum(opt.values()) / len(net.layers):.1f} per layer)" if label.startswith("wavenet") else ""
        print(f"  {label:15s} {sum(raw.values()):4d} -> {sum(opt.values()):4d} {per_layer:16s} {dict(opt.most_common())}")

    models = {"wn-before": StepModel.load(before_dir), "wn-after": StepModel.load(after.folder),
              "lstm": StepModel.load(lstm_dir)}
    _check_same(models["wn-before"], models["wn-after"])
    variants = {
        "wavenet before: reference graph + plain run": plain_stepper(models["wn-before"]),
        "wavenet: folded graph + plain run": plain_stepper(models["wn-after"]),
        "wavenet after: folded graph + StepModel.step": model_stepper(models["wn-after"]),
        "lstm before: plain run": plain_stepper(models["lstm"]),
        "lstm after: StepModel.step": model_stepper(models["lstm"]),
    }
    print(f"\ncached step, {args.steps} timed steps each after {args.warmup} warm-up, {args.rounds} interleaved rounds:")
    results = interleaved(variants, args.steps, args.warmup, args.rounds, len(models["wn-after"].vocab))
    for name, times in results.items():
        print(f"  {name:46s} p50 {np.percentile(times, 50):7.1f} us   p99 {np.percentile(times, 99):7.1f} us"
              f"   mean {times.mean():7.1f} us")

    if args.session_options:  # a separate run: spinning workers of one session would slow the others
        options = {"wavenet after (StepModel.load: 1 thread, spinning 0)": model_stepper(models["wn-after"]),
                   **option_steppers(after.folder)}
        print(f"\nsession options, folded graph through StepModel.step, {args.rounds} interleaved rounds:")
        for name, times in interleaved(options, args.steps, args.warmup, args.rounds, len(models["wn-after"].vocab)).items():
            print(f"  {name:52s} p50 {np.percentile(times, 50):7.1f} us   p99 {np.percentile(times, 99):7.1f} us"
                  f"   mean {times.mean():7.1f} us")
    if args.naive:
        naive_ratios(net, results, work, args.naive_steps)
    if args.ort_profile:
        for label, folder in (("before", before_dir), ("after", after.folder)):
            ort_profile(folder / "model.onnx", label, work)


# ---------------------------------------------------------------------- models and graphs


def _checkpoint(kind: str, path: Path | None, work: Path) -> Path:
    if path is not None and Path(path).is_file():
        return Path(path)
    import torch

    from improv.tokens import TokenConfig, Vocabulary
    from training.checkpoint import save_checkpoint
    from training.models import build_model

    vocab = Vocabulary(TokenConfig())
    config = {"vocab_size": len(vocab), **PRODUCTION} if kind == "wavenet" else \
        {"vocab_size": len(vocab), "embed": 64, "hidden": 256, "layers": 2, "dropout": 0.0}
    torch.manual_seed(0)
    model = build_model(kind, config)
    out = work / f"random-{kind}.pt"
    save_checkpoint({"model_kind": kind, "model_config": dataclasses.asdict(model.config), "vocabulary": vocab.to_dict(),
                     "train_config": {}, "state_dict": model.state_dict(), "epoch": 0, "step": 0, "metrics": {},
                     "train_command": "", "data_hash": "", "sample_tokens": []}, out)
    return out


def _export_reference(net, folded_dir: Path, out: Path) -> Path:
    """The unfolded step graph (the export before this change) with the folded export's sidecar."""
    import hashlib

    import torch

    out.mkdir(parents=True, exist_ok=True)
    step = net.reference_step_module().eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, step.example_inputs(), str(out / "model.onnx"), input_names=list(step.input_names),
                          output_names=list(step.output_names), opset_version=17, dynamo=False,
                          external_data=False, do_constant_folding=True)
    meta = json.loads((folded_dir / "model.json").read_text())
    meta["onnx_sha256"] = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    meta.pop("export_check", None)
    (out / "model.json").write_text(json.dumps(meta))
    return out


def node_counts(path: Path) -> tuple[collections.Counter, collections.Counter]:
    """Op-type counts of the graph as written and after onnxruntime's graph optimisations."""
    import onnx
    import onnxruntime as ort

    from improv.model_step import session_options

    raw = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node if n.op_type != "Constant")
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options()
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        opt = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    return raw, opt


def _check_same(before, after) -> None:
    tokens = np.random.default_rng(3).integers(0, len(after.vocab), 300).tolist()
    a, b = before.new_state(), after.new_state()
    diff = max(float(np.abs(before.step(t, a) - after.step(t, b)).max()) for t in tokens)
    print(f"reference vs folded graph, streamed 300 tokens: max |dlogit| {diff:.2e}")


# ---------------------------------------------------------------------- steppers and timing


def plain_stepper(model):
    """`StepModel.step` as it was before the IO binding: a feed dict, `session.run`, a fancy-index gather."""
    session, outputs = model.session, list(model._outputs)
    token_name, state_spec, queues = model._token_name, model._state, model._queues
    if queues:
        dilations = np.asarray(queues["dilations"], dtype=np.int64)
        layers, depth = np.arange(len(dilations)), int(dilations.max())

    def step(token: int, state) -> np.ndarray:
        feeds = {token_name: np.array([token], dtype=np.int64), **state.tensors}
        if queues:
            feeds[queues["input"]] = state.history[layers, (state.position - dilations) % depth]
        results = session.run(outputs, feeds)
        for (name, _, _), value in zip(state_spec, results[1:]):
            state.tensors[name] = value
        if queues:
            state.history[:, state.position % depth] = results[-1]
        state.position += 1
        return results[0][0]

    return model, step


def model_stepper(model):
    return model, model.step


def option_steppers(folder: Path) -> dict:
    """The folded graph through StepModel.step under the runtime's session options with another
    thread count or spinning."""
    import onnxruntime as ort

    import improv.model_step as runtime

    ort.set_default_logger_severity(3)  # no warning that allow_spinning is overwritten below: that is meant

    def opener(spinning: str, threads: int):
        def open_session(path, _threads):
            opts = runtime.session_options(threads)
            opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return open_session

    out, original = {}, runtime._open_session
    try:
        for spinning, threads in (("1", 1), ("0", 2), ("1", 2)):
            runtime._open_session = opener(spinning, threads)
            out[f"wavenet after, {threads} thread(s), spinning {spinning}"] = model_stepper(runtime.StepModel.load(folder))
    finally:
        runtime._open_session = original
    return out


def interleaved(variants: dict, steps: int, warmup: int, rounds: int, vocab: int) -> dict[str, np.ndarray]:
    """Round-robin blocks of steps over the variants (`benchmarks.step.interleave`); each keeps its
    own state across blocks and all step the same tokens; us per step."""
    from benchmarks.step import interleave

    tokens = np.random.default_rng(0).integers(0, vocab, warmup + steps + 1).tolist()

    def streaming(model, step):
        state = model.new_state()
        return lambda i: step(tokens[i], state)

    timed = {name: (streaming(model, step), steps, warmup) for name, (model, step) in variants.items()}
    return {name: ms * 1e3 for name, ms in interleave(timed, rounds, rewarm=0).items()}


def naive_ratios(net, results: dict, work: Path, naive_steps: int) -> None:
    from benchmarks.step import _session, export_window

    windows = {"256": 256, "receptive field": int(net.receptive_field)}
    sessions = {}
    for label, window in windows.items():
        path = work / f"naive-{window}" / "window.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        export_window(net, window, path)
        sessions[label] = (_session(path), np.random.default_rng(1).integers(0, net.config.vocab_size, (1, window)))
    times = {label: [] for label in sessions}
    for _ in range(10):
        for session, buf in sessions.values():
            session.run(None, {"tokens": buf})
    for i in range(naive_steps):
        for label, (session, buf) in sessions.items():
            t0 = time.perf_counter_ns()
            logits = session.run(None, {"tokens": buf})[0]
            buf[0, :-1] = buf[0, 1:]
            buf[0, -1] = int(logits[0, -1].argmax())
            times[label].append(time.perf_counter_ns() - t0)
    print(f"\nnaive full-window recompute ({naive_steps} windows each, interleaved) and naive / cached (p50 / p50):")
    cached = {k: float(np.percentile(v, 50)) for k, v in results.items() if k.startswith("wavenet")}
    for label, v in times.items():
        naive_us = float(np.percentile(np.asarray(v) / 1e3, 50))
        ratios = ", ".join(f"{k.split(':')[0]} {naive_us / c:5.1f}x" for k, c in cached.items())
        print(f"  window {label:16s} p50 {naive_us / 1e3:6.2f} ms   {ratios}")


def ort_profile(path: Path, label: str, work: Path, runs: int = 2000) -> None:
    import onnxruntime as ort

    from improv.model_step import session_options

    opts = session_options()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"ort-profile-{label}")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: (np.zeros([1], np.int64) if i.type == "tensor(int64)" else np.zeros(i.shape, np.float32))
             for i in session.get_inputs()}
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op = collections.defaultdict(list)
    n_runs = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]].append(e["dur"])
    total = sum(sum(v) for v in per_op.values())
    print(f"\nonnxruntime profiler, {label} graph ({n_runs} runs; absolute times include the profiler's own cost):")
    for op, durs in sorted(per_op.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {op:12s} {len(durs) / n_runs:5.1f} calls/run   {100 * sum(durs) / total:5.1f}% of kernel time")


if __name__ == "__main__":
    main()
