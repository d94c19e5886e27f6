"""Model step: the cached ONNX step against the PyTorch eager step and a naive window recompute.

Per shipped model, all in one run, p50 / p99 / max in ms over `steps` timed calls after a warm-up;
the cached, torch and naive calls are timed in round-robin blocks (`interleave`), so the ratios of
their p50s are not the machine's mood when each was taken:

* cached: `improv.model_step.StepModel.step` (1 intra-op thread), state kept between tokens;
* context: the same step from a copy of the state after 100 and after 10 000 tokens, the two
  timed alternately so machine noise hits both alike;
* after idle: the first cached step after the thread slept `idle_s` (20 ms), as a live step
  comes after a silence. On this project's machine (a KVM guest whose idle vCPU halts) all code
  is slower right after waking, onnxruntime the most (`python -m benchmarks.profiles.reaction_profile`
  times a 15-KB onnxruntime graph, numpy and plain Python back to back and after a sleep); it is
  most of improv's share of a live duet reaction (`midi.*.reaction_inside_*`);
* torch: the model's own step module (`step_module()`) in eager PyTorch, 1 thread, the same
  state bookkeeping (LSTM h/c; WaveNet ring buffer);
* naive: the full-sequence model exported to ONNX for a fixed window (64, 256 tokens and, for a
  WaveNet, its receptive field), run once per generated token over the last `window` tokens, the
  way the tutorials generate (logits of the last position, argmax appended, window shifted).

The torch module comes from a training checkpoint (`--checkpoint`, a *.pt in the model folder, or
the sidecar's run folder ``train_config.out``), else it is rebuilt from the sidecar's
``model_config`` and the ONNX initializers. Whatever the source, it must reproduce model.onnx's
logits (streamed, 32 tokens, 1e-3) or the torch and naive figures are reported missing.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import Report

REWARM = 3  # untimed calls at the start of each interleaved block
PARITY_TOKENS = 32
PARITY_TOLERANCE = 1e-3  # max abs logit difference, torch full sequence vs streamed ONNX steps
REPO = Path(__file__).resolve().parent.parent


class Missing(Exception):
    """A measurement that cannot be made here; the message says why."""


@dataclass(frozen=True)
class StepOptions:
    steps: int = 2000  # timed calls per measurement (cached, torch, contexts)
    naive_steps: int = 2000  # timed windows per naive measurement
    warmup: int = 200
    windows: tuple[int, ...] = (64, 256)
    contexts: tuple[int, int] = (100, 10_000)
    seed: int = 0
    idle_s: float = 0.02  # the sleep before each after-idle step
    idle_steps: int = 100  # after-idle steps timed
    rounds: int = 20  # round-robin blocks of the cached, torch and naive measurements (`interleave`)


def summary(times_ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(times_ms, 50)), "p99": float(np.percentile(times_ms, 99)),
            "max": float(times_ms.max()), "n": float(len(times_ms))}


def interleave(variants: dict[str, tuple], rounds: int, rewarm: int = REWARM) -> dict[str, np.ndarray]:
    """{name: (fn, n, warmup)} -> {name: milliseconds of each of its n timed calls fn(i)}. After
    every warm-up, the timed calls run in `rounds` round-robin blocks (n / rounds calls of each
    variant in turn), so a slow spell of the machine hits every variant alike and the ratios of
    their p50s hold (timed one after another, a cached step measured 0.107 ms p50 in the same run
    whose later context figures had 0.072 ms). Each block starts with `rewarm` untimed calls: the
    first cached steps after a naive window find the caches cold, and with 20 blocks those
    would be the p99 of a streaming step (0.31 ms for bach-wavenet, 0.21 ms without them)."""
    calls = {name: 0 for name in variants}
    for name, (fn, _, warmup) in variants.items():
        for _ in range(warmup):
            fn(calls[name])
            _after(fn, calls[name])
            calls[name] += 1
    times = {name: [] for name in variants}
    clock = time.perf_counter_ns
    for r in range(rounds):
        for name, (fn, n, _) in variants.items():
            for _ in range(rewarm):
                fn(calls[name])
                _after(fn, calls[name])
                calls[name] += 1
            for _ in range(n * (r + 1) // rounds - n * r // rounds):
                t0 = clock()
                fn(calls[name])
                times[name].append(clock() - t0)
                _after(fn, calls[name])
                calls[name] += 1
    return {name: np.asarray(t, dtype=float) / 1e6 for name, t in times.items()}


def _after(fn, i: int) -> None:
    """A variant's untimed work after each call (`_MemoryStep.after`), if it has any."""
    after = getattr(fn, "after", None)
    if after is not None:
        after(i)


def bench_model(report: Report, name: str, folder: Path, options: StepOptions, work_dir: Path,
                checkpoint: Path | None = None) -> None:
    from improv.model_step import StepModel

    model = StepModel.load(folder, threads=1)
    rng = np.random.default_rng(options.seed)
    tokens = rng.integers(0, len(model.vocab), size=max(options.contexts) + 4 * options.steps + 4096)
    p = f"step.{name}"
    _contexts(report, p, name, model, tokens, options)
    idle = summary(_after_idle(model, tokens, options))
    try:
        module, source = torch_module(model, checkpoint)
    except Missing as err:
        module, why = None, f"no PyTorch module for {name}: {err}"
    windows = []
    if module is not None:
        windows = [(w, f"naive{w}", f"window {w}") for w in options.windows]
        if model.receptive_field:
            rf = int(model.receptive_field)
            windows.append((rf, "naive_rf", f"window {rf} (receptive field)"))
    times, learn_ms = _timed(model, module, tokens, windows, options, work_dir, name)
    cached = _put_summary(report, f"{p}.onnx", times["onnx"], f"{name}: cached ONNX step")
    _put_summary(report, f"{p}.memory", times["memory"], f"{name}: the same step with the session memory")
    report.put(f"{p}.memory_added_p99_ms", report.get(f"{p}.memory_p99_ms") - report.get(f"{p}.onnx_p99_ms"),
               f"{name}: what the session memory adds to the step's p99", "ms")
    _put_summary(report, f"{p}.memory_learn", learn_ms, f"{name}: the memory's lesson per token, after the reaction")
    report.put(f"{p}.after_idle_p50_ms", idle["p50"],
               f"{name}: first step after {options.idle_s * 1e3:g} ms asleep p50", "ms")
    report.put(f"{p}.after_idle_p99_ms", idle["p99"])
    report.put(f"{p}.after_idle_over_cached", idle["p50"] / cached, f"{name}: after idle / back to back (p50)", "×")
    if module is None:
        report.missing([f"{p}.torch_p50_ms", f"{p}.torch_over_onnx"], why,
                       {f"{p}.torch_over_onnx": (f"{name}: torch eager / ONNX step (p50)", "×")})
        report.missing([f"{p}.naive256_p50_ms", f"{p}.naive_over_cached"], why,
                       {f"{p}.naive_over_cached": (f"{name}: naive window 256 / cached (p50)", "×")})
        _missing_rf(report, p, name, model, why)
        return
    report.note(f"{p}.torch_source", source)
    torch_ms = _put_summary(report, f"{p}.torch", times["torch"], f"{name}: PyTorch eager step")
    report.put(f"{p}.torch_over_onnx", torch_ms / cached, f"{name}: torch eager / ONNX step (p50)", "×")
    if not model.receptive_field:
        _missing_rf(report, p, name, model, "")
    for _, tag, text in windows:
        naive = _put_summary(report, f"{p}.{tag}", times[tag], f"{name}: naive recompute, {text}")
        ratio_key = {"naive256": "naive_over_cached", "naive_rf": "naive_rf_over_cached"}.get(tag, f"{tag}_over_cached")
        report.put(f"{p}.{ratio_key}", naive / cached, f"{name}: naive {text} / cached (p50)", "×")


def _timed(model, module, tokens: np.ndarray, windows: list, options: StepOptions, work_dir: Path,
           name: str) -> tuple[dict, np.ndarray]:
    """The cached step, the same with the session memory, and with a torch module its eager step
    and the naive windows, interleaved; and the memory's lessons (ms each)."""
    memory = _MemoryStep(model, tokens)
    variants = {"onnx": (_cached_fn(model, tokens), options.steps, options.warmup),
                "memory": (memory, options.steps, options.warmup)}
    with contextlib.ExitStack() as stack:
        if module is not None:
            variants["torch"] = (stack.enter_context(_torch_fn(module, model, tokens)), options.steps, options.warmup)
            for window, tag, _ in windows:
                fn = _naive_fn(module, window, tokens, work_dir / f"{name}-{window}")
                variants[tag] = (fn, options.naive_steps, min(options.warmup, 20))
        return interleave(variants, options.rounds), np.asarray(memory.learn_ms[-options.steps:])


def _missing_rf(report: Report, p: str, name: str, model, why: str) -> None:
    if not model.receptive_field:
        why = f"{name} is an {model.kind}: no receptive field, its state carries the whole context"
    report.missing([f"{p}.naive_rf_over_cached"], why,
                   {f"{p}.naive_rf_over_cached": (f"{name}: naive receptive field / cached (p50)", "×")})


def _put_summary(report: Report, prefix: str, times_ms: np.ndarray, label: str) -> float:
    s = summary(times_ms)
    report.put(f"{prefix}_p50_ms", s["p50"], f"{label} p50", "ms")
    report.put(f"{prefix}_p99_ms", s["p99"], f"{label} p99", "ms")
    report.put(f"{prefix}_max_ms", s["max"], f"{label} max", "ms")
    report.put(f"{prefix}_steps", s["n"])
    return s["p50"]


# ---------------------------------------------------------------------- the three ways to step


def _cached_fn(model, tokens: np.ndarray):
    state = model.new_state()
    ids = tokens.tolist()
    return lambda i: model.step(ids[i], state)


class _MemoryStep:
    """A player's token as the live path takes it with the session memory on, over a player's
    figures (`benchmarks.music.practice_tokens`): timed, the reaction's part (the memory's cursor
    moves, the model steps, the memory predicts, the mix is made); `after` (untimed by
    `interleave`) times on its own the lesson the engine gives once the reaction has gone out
    (the blend learns whom to follow, the memory counts the token)."""

    def __init__(self, model, tokens: np.ndarray) -> None:
        from improv.blend import Blend
        from improv.context import ModelContext, TimedModel
        from improv.memory import SessionMemory

        from benchmarks.music import practice_tokens

        self.ids = practice_tokens(model.vocab, len(tokens) // 3).tolist()
        memory = SessionMemory(model.vocab.names)
        self.context = ModelContext(TimedModel(model), memory, Blend(memory.order))
        self.learn_ms: list[float] = []

    def __call__(self, i: int) -> None:
        self.context.hear(self.ids[i % len(self.ids)], learn=False)
        self.context.mixed_logits()

    def after(self, i: int) -> None:
        t0 = time.perf_counter_ns()
        self.context.learn()
        self.learn_ms.append((time.perf_counter_ns() - t0) / 1e6)


def _after_idle(model, tokens: np.ndarray, options: StepOptions) -> np.ndarray:
    """Milliseconds of the first step after each `idle_s` sleep (then a second, untimed step, as
    a player's note costs two: its time shift and its pitch)."""
    step = _cached_fn(model, tokens)
    for i in range(options.warmup):
        step(i)
    out = np.empty(options.idle_steps)
    clock = time.perf_counter_ns
    for i in range(options.idle_steps):
        time.sleep(options.idle_s)
        t0 = clock()
        step(2 * i)
        out[i] = clock() - t0
        step(2 * i + 1)
    return out / 1e6


def _contexts(report: Report, p: str, name: str, model, tokens: np.ndarray, options: StepOptions) -> None:
    """Each timed step starts from a copy of the state after `ctx` tokens (the copy is not timed)."""
    short, long_ = options.contexts
    states = {}
    for ctx in (short, long_):
        states[ctx] = model.new_state()
        model.feed(tokens[:ctx].tolist(), states[ctx])
    times = {ctx: np.empty(options.steps) for ctx in states}
    clock = time.perf_counter_ns
    for i in range(options.warmup + options.steps):
        token = int(tokens[long_ + i])
        for ctx, base in states.items():
            state = base.copy()
            t0 = clock()
            model.step(token, state)
            dt = clock() - t0
            if i >= options.warmup:
                times[ctx][i - options.warmup] = dt / 1e6
    for ctx, t in times.items():
        report.put(f"{p}.ctx{ctx}_p50_ms", float(np.percentile(t, 50)), f"{name}: cached step after {ctx:,} tokens p50",
                   "ms")
        report.put(f"{p}.ctx{ctx}_p99_ms", float(np.percentile(t, 99)))
    ratio = report.get(f"{p}.ctx{long_}_p50_ms") / report.get(f"{p}.ctx{short}_p50_ms")
    report.put(f"{p}.long_over_short_context", ratio, f"{name}: step at {long_:,} / at {short} tokens (p50)", "×")


@contextlib.contextmanager
def _torch_fn(module, model, tokens: np.ndarray):
    """The step module's fn(i) (state kept as the runtime keeps it), while torch runs on one
    thread in inference mode."""
    import torch

    step = module.step_module().eval()
    ids = tokens.tolist()
    token = torch.zeros(1, dtype=torch.int64)
    if model.kind == "lstm":
        h, c = (t.clone() for t in step.example_inputs()[1:])
        state = {"h": h, "c": c}

        def fn(i: int) -> None:
            token[0] = ids[i]
            _, state["h"], state["c"] = step(token, state["h"], state["c"])
    else:
        dilations = torch.tensor(model.meta["queues"]["dilations"], dtype=torch.int64)
        depth, layers = int(dilations.max()), torch.arange(len(dilations))
        history = torch.zeros(len(dilations), depth, int(model.meta["queues"]["channels"]))
        pos = [0]

        def fn(i: int) -> None:
            token[0] = ids[i]
            _, current = step(token, history[layers, (pos[0] - dilations) % depth])
            history[:, pos[0] % depth] = current
            pos[0] += 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as onnxruntime's single intra-op thread
    try:
        with torch.inference_mode():
            yield fn
    finally:
        torch.set_num_threads(threads)


def _naive_fn(module, window: int, tokens: np.ndarray, folder: Path):
    """Generate token by token, recomputing the whole last-`window` tokens through ONNX each time."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "window.onnx"
    export_window(module, window, path)
    session = _session(path)
    buffer = tokens[:window].astype(np.int64).reshape(1, window).copy()  # (1, W)

    def fn(_: int) -> None:
        logits = session.run(None, {"tokens": buffer})[0]  # (1, W, V): every position, as tutorials do
        buffer[0, :-1] = buffer[0, 1:]
        buffer[0, -1] = int(logits[0, -1].argmax())

    return fn


def export_window(module, window: int, path: Path) -> None:
    """The full-sequence model for a (1, window) int64 input -> (1, window, V) logits, opset 17."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, window, dtype=torch.int64),), str(path),
                          input_names=["tokens"], output_names=["logits"], opset_version=17, dynamo=False,
                          do_constant_folding=True)


def _session(path: Path):
    import onnxruntime as ort

    from improv.model_step import session_options

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------- where the torch module comes from


def torch_module(model, checkpoint: Path | None = None):
    """(full-sequence nn.Module in eval mode, where it came from); `Missing` with every reason."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise Missing("PyTorch is not installed (pip install 'improv[train]')") from err
    reasons = []
    for label, load in _candidates(model, checkpoint):
        try:
            module = load()
            diff = parity(module, model)
        except Missing as err:
            reasons.append(f"{label}: {err}")
            continue
        except Exception as err:  # noqa: BLE001 - any failure to load means: not this source
            reasons.append(f"{label}: {type(err).__name__}: {' '.join(str(err).split())[:160]}")
            continue
        return module, f"{label} (matches model.onnx, max |Δlogit| {diff:.1g})"
    raise Missing("; ".join(reasons))


def _candidates(model, checkpoint: Path | None):
    seen: set[Path] = set()
    paths = [Path(checkpoint)] if checkpoint else []
    paths += sorted(model.folder.glob("*.pt"))
    out = (model.meta.get("train_config") or {}).get("out")
    if out:
        for base in (Path.cwd(), REPO):
            paths += [base / out / "best.pt", base / out / "last.pt"]
    for path in paths:
        if path == checkpoint or (path.is_file() and path.resolve() not in seen):
            seen.add(path.resolve())
            yield f"checkpoint {path}", lambda path=path: _from_checkpoint(path, model)
    yield "model_config + ONNX initializers", lambda: rebuild_from_onnx(model)


def _from_checkpoint(path: Path, model):
    from training.checkpoint import load_checkpoint, model_from_checkpoint

    module, vocab = model_from_checkpoint(load_checkpoint(path))
    if list(vocab.names) != list(model.vocab.names):
        raise Missing("its vocabulary differs from the model's")
    return module


def parity(module, model) -> float:
    """Max abs difference between the module's full-sequence logits and model.onnx streamed."""
    import torch

    ids = np.random.default_rng(1).integers(0, len(model.vocab), PARITY_TOKENS).tolist()
    state = model.new_state()
    streamed = np.stack([model.step(t, state) for t in ids])  # (N, V)
    with torch.no_grad():
        full = module.eval()(torch.tensor([ids], dtype=torch.int64))[0].numpy()  # (N, V)
    if full.shape != streamed.shape:
        raise Missing(f"logits {full.shape} vs model.onnx {streamed.shape}")
    diff = float(np.abs(full - streamed).max())
    if not diff <= PARITY_TOLERANCE:
        raise Missing(f"does not reproduce model.onnx (max |Δlogit| {diff:.2g} > {PARITY_TOLERANCE:g})")
    return diff


def rebuild_from_onnx(model):
    """The training module of `model.kind` with weights read back out of the step graph."""
    import onnx
    import torch
    from onnx import numpy_helper

    from training.models import build_model

    graph = onnx.load(str(model.folder / model.meta.get("onnx_file", "model.onnx"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    found = {_strip(k): v for k, v in inits.items()}
    config = dict(model.meta.get("model_config") or {}) or _infer_config(model, found, graph, inits)
    try:
        module = build_model(model.kind, config)
    except (TypeError, ValueError) as err:
        raise Missing(f"model_config does not build a {model.kind} ({err})") from err
    if model.kind == "wavenet" and "w_past" in found:  # a folded step graph (training/models/wavenet.py)
        from training.models.wavenet import WaveNetStep

        found.update({k: v.numpy() for k, v in WaveNetStep.unfold(found, module.config).items()})
    found.update(_gemm_weights(graph, inits))
    if model.kind == "lstm":
        found.update(_lstm_weights(graph, inits))
    state = module.state_dict()
    missing = [k for k in state if k not in found or found[k].size != state[k].numel()]
    if missing:
        raise Missing(f"no initializer for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    module.load_state_dict({k: torch.from_numpy(np.array(found[k], dtype=np.float32)).reshape(state[k].shape)
                            for k in state})
    return module.eval()


def _strip(name: str) -> str:
    return name[4:] if name.startswith("net.") else name


def _infer_config(model, found: dict, graph, inits: dict) -> dict:
    """A config from the initializers' shapes, for sidecars written without model_config."""
    vocab = len(model.vocab)
    if model.kind == "lstm":
        cells = [n for n in graph.node if n.op_type == "LSTM"]
        if "embed.weight" not in found or not cells:
            raise Missing("the sidecar has no model_config and the graph has no embed.weight / LSTM to infer it from")
        return {"vocab_size": vocab, "embed": int(found["embed.weight"].shape[1]),
                "hidden": int(inits[cells[0].input[2]].shape[-1]), "layers": len(cells), "dropout": 0.0}
    queues = model.meta.get("queues") or {}
    dilations = list(queues.get("dilations") or [])
    cycle = dilations.index(1, 1) if dilations.count(1) > 1 else len(dilations)
    out_bias = found.get("layers.0.out.bias")
    if not dilations or out_bias is None:
        raise Missing("the sidecar has no model_config and the graph has no layers.0.out.bias to infer it from")
    channels = int(queues["channels"])
    return {"vocab_size": vocab, "channels": channels, "skip_channels": int(out_bias.shape[0]) - channels,
            "dilation_cycle": cycle, "stacks": len(dilations) // cycle, "dropout": 0.0}


def _gemm_weights(graph, inits: dict) -> dict:
    """Weights of Gemm nodes whose bias is a named parameter ("<prefix>.bias" -> "<prefix>.weight").

    A WaveNet layer's kernel-2 convolution is two products in the step graph: the tap at t is the
    Gemm with the conv's bias, the tap at t - d a MatMul added to it; they are stacked back.
    """
    producers = {o: n for n in graph.node for o in n.output}
    found = {}
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            continue
        bias = _strip(node.input[2])
        if not bias.endswith(".bias"):
            continue
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        weight = inits[node.input[1]] if trans_b else inits[node.input[1]].T  # (out, in)
        prefix = bias[: -len(".bias")]
        found[f"{prefix}.weight"] = weight[..., None]  # (out, in, 1): a 1x1 convolution (or linear)
        if prefix.endswith(".conv"):
            past = _added_matmul(node, graph, producers, inits)
            if past is not None:
                found[f"{prefix}.weight"] = np.stack([past.T, weight], axis=-1)  # (out, in, 2): taps t-d, t
    return found


def _added_matmul(gemm, graph, producers: dict, inits: dict):
    for node in graph.node:
        if node.op_type == "Add" and gemm.output[0] in node.input:
            other = [i for i in node.input if i != gemm.output[0]]
            source = producers.get(other[0]) if other else None
            if source is not None and source.op_type == "MatMul" and source.input[1] in inits:
                return inits[source.input[1]]  # (in, out)
    return None


def _lstm_weights(graph, inits: dict) -> dict:
    """ONNX LSTM nodes (one per layer, gates i, o, f, c) -> PyTorch's (gates i, f, g, o)."""
    found = {}
    for layer, node in enumerate(n for n in graph.node if n.op_type == "LSTM"):
        w, r, b = (inits.get(name) for name in node.input[1:4])
        if w is None or r is None or b is None:
            raise Missing(f"LSTM layer {layer} weights are not constants in the graph")
        bias_w, bias_r = np.split(b[0], 2)
        found[f"lstm.weight_ih_l{layer}"] = _onnx_gates_to_torch(w[0])
        found[f"lstm.weight_hh_l{layer}"] = _onnx_gates_to_torch(r[0])
        found[f"lstm.bias_ih_l{layer}"] = _onnx_gates_to_torch(bias_w)
        found[f"lstm.bias_hh_l{layer}"] = _onnx_gates_to_torch(bias_r)
    return found


def _onnx_gates_to_torch(w: np.ndarray) -> np.ndarray:
    i, o, f, c = np.split(w, 4, axis=0)
    return np.concatenate([i, f, c, o], axis=0)
