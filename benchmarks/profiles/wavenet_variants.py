"""Why the cached WaveNet step cannot be made much faster with standard ONNX ops in onnxruntime.

    .venv/bin/python -m benchmarks.profiles.wavenet_variants [--model models/bach-wavenet] [--steps 6000] \
        [--rounds 30] [--repeats 2] [--warmup 500]

Rebuilds the shipped step graph from its own weights in other standard-op layouts (exact ones, and
DIAG graphs with parts removed, for attribution only) and prints per graph its nodes, its parity
with the shipped graph, and p50 / p99 of bare IO-bound runs, all interleaved in one process, in the
runtime's session options. Findings: README, "WaveNet naive / cached".
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from benchmarks.step import interleave
from benchmarks.profiles.wavenet_step_profile import node_counts
from improv.model_step import session_options

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "bach-wavenet"


@dataclass(frozen=True)
class Spec:
    """The shipped step graph: weights, sizes and tensor names."""

    w: dict[str, np.ndarray]  # initializers by name
    dilations: np.ndarray  # (L,) how many steps back each layer's past is
    channels: int  # C
    skip: int  # S
    vocab: int  # V
    names: dict[str, str]  # token / past / logits / current -> names in the graph
    layers: int  # L


def load_spec(folder: Path) -> Spec:
    meta = json.loads((folder / "model.json").read_text())
    queues = meta["queues"]
    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(folder / "model.onnx")).graph.initializer}
    dilations = np.asarray(queues["dilations"], dtype=np.int64)
    if w["w_past"].shape[:2] != (len(dilations), queues["channels"]):
        raise SystemExit(f"w_past is {w['w_past'].shape}; model.json says L={len(dilations)} C={queues['channels']}")
    names = {"token": meta["token_input"], "past": queues["input"], "logits": meta["logits_output"],
             "current": queues["output"]}
    return Spec(w, dilations, int(queues["channels"]), w["w_skip"].shape[1], w["w_head2"].shape[1], names, len(dilations))


class Graph:
    """A tiny onnx.helper builder: initializers deduplicated by name, generated tensor names."""

    def __init__(self, spec: Spec) -> None:
        self.spec, self.nodes, self.inits = spec, [], {}

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.setdefault(name, numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], nout: int = 1, out: str | None = None, **attrs):
        outs = [out] if out else [f"t{len(self.nodes)}_{k}" for k in range(nout)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if nout == 1 else outs

    def save(self, path: Path) -> Path:
        s, L, C = self.spec, self.spec.layers, self.spec.channels
        value = lambda name, kind, shape: helper.make_tensor_value_info(s.names[name], kind, shape)  # noqa: E731
        graph = helper.make_graph(
            self.nodes, "step", [value("token", TensorProto.INT64, [1]), value("past", TensorProto.FLOAT, [L, C])],
            [value("logits", TensorProto.FLOAT, [1, s.vocab]), value("current", TensorProto.FLOAT, [L, C])],
            list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def stack(g: Graph, terms: list[str] | None, head: bool = True, shared: bool = False) -> Graph:
    """Embedding, L gated layers, current = layer inputs + beta, skip/head -> logits. terms: the 2L past
    products (1, C) added in the gate Gemms (as shipped); None: gate Gemms on [x_l | past_l], K = 2C."""
    s, C = g.spec, g.spec.channels
    x = g.op("Gather", [g.init("embed", s.w["embed"]), s.names["token"]], axis=0)  # (1, C)
    if terms is None:
        past = g.op("Split", [s.names["past"], g.init("split_l", np.ones(s.layers, np.int64))], nout=s.layers, axis=0)
    rows, gates = [], []
    for i in range(s.layers):
        j = 0 if shared else i
        rows.append(x)
        if terms is None:
            u, (wp, bp) = g.op("Concat", [x, past[i]], axis=1), (s.w["w_past"][i], s.w["b_past"][i])  # (1, 2C)
            pre = [g.op("Gemm", [u, g.init(f"w{k}{i}", np.concatenate([s.w[f"w_{k}{i}"], wp[:, h]])),
                                 g.init(f"b{k}{i}", bp[:, h])]) for k, h in (("a", slice(0, C)), ("b", slice(C, None)))]
        else:
            pre = [g.op("Gemm", [x, g.init(f"w_{k}{j}", s.w[f"w_{k}{j}"]), terms[2 * i + n]]) for n, k in enumerate("ab")]
        gates.append(g.op("Mul", [g.op("Tanh", [pre[0]]), g.op("Sigmoid", [pre[1]])]))  # (1, C)
        if i < s.layers - 1:
            x = g.op("Gemm", [gates[-1], g.init(f"w_res{j}", s.w[f"w_res{j}"]), x])
    g.op("Add", [g.op("Concat", rows, axis=0), g.init("beta", s.w["beta"])], out=s.names["current"])  # (L, C)
    if not head:  # DIAG: logits from the last gate, no skip Gemm, no head
        g.op("Gemm", [gates[-1], g.init("w_zero", np.zeros((C, s.vocab), np.float32))], out=s.names["logits"])
        return g

    def dense(x: str, name: str, out: str | None = None) -> str:
        return g.op("Gemm", [x, g.init(f"w_{name}", s.w[f"w_{name}"]), g.init(f"b_{name}", s.w[f"b_{name}"])], out=out)

    skip = g.op("Relu", [dense(g.op("Concat", gates, axis=1), "skip")])  # (1, L*C) -> (1, S)
    dense(g.op("Relu", [dense(skip, "head1")]), "head2", out=s.names["logits"])  # (1, V)
    return g


def split_terms(g: Graph, products: str, by_row: bool) -> list[str]:
    """L past products (2C each) -> 2L terms (1, C); by_row: Reshape (2L, C), Split axis 0 (as shipped)."""
    L, C = g.spec.layers, g.spec.channels
    shape, sizes, axis = ([2 * L, C], [1] * 2 * L, 0) if by_row else ([1, 2 * L * C], [C] * 2 * L, 1)
    r = g.op("Reshape", [products, g.init("shape_terms", np.array(shape, np.int64))])
    return g.op("Split", [r, g.init("split_terms", np.array(sizes, np.int64))], nout=2 * L, axis=axis)


def batched_past(g: Graph) -> list[str]:
    """The shipped layout: one batched MatMul (L, 1, C) @ (L, C, 2C) + b_past."""
    u = g.op("Unsqueeze", [g.spec.names["past"], g.init("axis1", np.array([1], np.int64))])
    m = g.op("MatMul", [u, g.init("w_past", g.spec.w["w_past"])])
    return split_terms(g, g.op("Add", [m, g.init("b_past", g.spec.w["b_past"])]), by_row=True)


def conv_past(g: Graph) -> list[str]:
    """The L past products (C -> 2C each) as one 1x1 Conv with group = L, the bias inside the Conv."""
    s, L, C = g.spec, g.spec.layers, g.spec.channels
    x = g.op("Reshape", [s.names["past"], g.init("shape_in", np.array([1, L * C, 1], np.int64))])
    weight = s.w["w_past"].transpose(0, 2, 1).reshape(L * 2 * C, C, 1)  # group l -> output channels l*2C..
    conv = g.op("Conv", [x, g.init("w_conv", weight), g.init("b_conv", s.w["b_past"].reshape(-1))], group=L)
    return split_terms(g, conv, by_row=False)


def paired_past(g: Graph, group: int = 2) -> list[str]:
    """The past products as L/group batched MatMuls, each block-diagonal over `group` layers."""
    s, L, C = g.spec, g.spec.layers, g.spec.channels
    if L % group:
        raise SystemExit(f"paired past taps need a layer count divisible by {group}; this model has {L}")
    blocks = np.zeros((L // group, group * C, group * 2 * C), np.float32)
    for layer in range(L):
        k, j = divmod(layer, group)
        blocks[k, j * C:(j + 1) * C, j * 2 * C:(j + 1) * 2 * C] = s.w["w_past"][layer]
    x = g.op("Reshape", [s.names["past"], g.init("shape_in", np.array([L // group, 1, group * C], np.int64))])
    bias = g.init("b_blocks", s.w["b_past"].reshape(L // group, 1, group * 2 * C))
    return split_terms(g, g.op("Add", [g.op("MatMul", [x, g.init("w_blocks", blocks)]), bias]), by_row=True)


def const_past(g: Graph) -> list[str]:
    """DIAG: the past terms frozen to their bias; no past product at all (the past input is unused)."""
    bias = g.spec.w["b_past"].reshape(2 * g.spec.layers, g.spec.channels)
    return [g.init(f"term{k}", bias[k:k + 1]) for k in range(len(bias))]


def build_all(spec: Spec, folder: Path, shipped: Path) -> dict[str, Path]:
    """label -> model.onnx, the shipped graph first; DIAG labels are not the model."""
    def make(name: str, past: Callable[[Graph], list[str]] | None, **kw) -> Path:
        g = Graph(spec)
        return stack(g, past(g) if past else None, **kw).save(folder / f"{name}.onnx")

    return {"(1) shipped graph": shipped,
            "(2) grouped Conv past taps": make("conv", conv_past),
            "(3) concat [x_l|past_l], gate Gemms K=2C": make("concat", None),
            "(4) past taps in L/2 block-diag batches": make("paired", paired_past),
            "(5) DIAG past path -> constants": make("const_past", const_past),
            "(6) DIAG no skip/head": make("no_head", batched_past, head=False),
            "(7) DIAG all layers share layer 0 weights": make("shared", batched_past, shared=True)}


def open_session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    """A session in the runtime's options (1 thread); `optimized`: write what runs there."""
    opts = session_options()
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Stepper:
    """One session IO-bound to preallocated buffers, with StepModel's ring buffer of layer inputs."""

    def __init__(self, path: Path, spec: Spec) -> None:
        L, C, n = spec.layers, spec.channels, spec.names
        self.session = open_session(path)
        self.io = self.session.io_binding()
        self.token, self.past = np.zeros(1, np.int64), np.zeros((L, C), np.float32)
        self.logits, self.current = np.zeros((1, spec.vocab), np.float32), np.zeros((L, C), np.float32)
        for bind, name, buf in ((self.io.bind_input, "token", self.token), (self.io.bind_input, "past", self.past),
                                (self.io.bind_output, "logits", self.logits), (self.io.bind_output, "current", self.current)):
            bind(n[name], "cpu", 0, buf.dtype.type, list(buf.shape), buf.ctypes.data)
        self.depth = int(spec.dilations.max())
        slots = (np.arange(self.depth)[:, None] - spec.dilations[None, :]) % self.depth  # (depth, L)
        self.rows = [np.arange(L) * self.depth + row for row in slots]  # slot -> rows of history (L*depth, C)
        self.history, self.position = np.zeros((L, self.depth, C), np.float32), 0

    def step(self, token: int) -> np.ndarray:
        """As StepModel.step: gather the rows written dilations[l] steps ago, run, store current."""
        slot = self.position % self.depth
        self.token[0] = token
        self.history.reshape(-1, self.past.shape[1]).take(self.rows[slot], 0, self.past, "clip")
        self.session.run_with_iobinding(self.io)
        self.history[:, slot] = self.current
        self.position += 1
        return self.logits


def parity(ref: Stepper, other: Stepper, tokens: np.ndarray) -> tuple[float, float]:
    """max |dlogits|, max |dcurrent| over the streamed tokens."""
    dl = dc = 0.0
    for t in tokens.tolist():
        dl = max(dl, float(np.abs(ref.step(t) - other.step(t)).max()))
        dc = max(dc, float(np.abs(ref.current - other.current).max()))
    return dl, dc


def interleaved(steppers: dict[str, Stepper], tokens: list[int], rounds: int) -> dict[str, np.ndarray]:
    """Bare run_with_iobinding (past fixed, token changing) in round-robin blocks; us per run."""

    def bare(s: Stepper) -> Callable[[int], None]:
        run, io, token = s.session.run_with_iobinding, s.io, s.token

        def fn(i: int) -> None:
            token[0] = tokens[i]
            run(io)

        return fn

    variants = {name: (bare(s), len(tokens), 0) for name, s in steppers.items()}
    return {name: ms * 1e3 for name, ms in interleave(variants, rounds, rewarm=0).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="folder with model.onnx and model.json")
    parser.add_argument("--steps", type=int, default=6000, help="timed runs per graph and repeat")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved blocks per repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timing passes over all graphs")
    parser.add_argument("--warmup", type=int, default=500, help="streamed steps per graph before timing")
    args = parser.parse_args(argv)

    spec, rng = load_spec(args.model), np.random.default_rng(0)
    print(f"{args.model}: L={spec.layers} C={spec.channels} skip={spec.skip} V={spec.vocab} "
          f"dilations={spec.dilations.tolist()}\nonnxruntime {ort.__version__}, 1 thread, {args.steps} bare "
          f"IO-bound runs per graph x {args.repeats} repeats, {args.rounds} interleaved blocks each")
    with tempfile.TemporaryDirectory(prefix="wavenet-variants.") as tmp:
        paths = build_all(spec, Path(tmp), args.model / "model.onnx")
        nodes = {label: sum(node_counts(path)[1].values()) for label, path in paths.items()}
        steppers = {label: Stepper(path, spec) for label, path in paths.items()}
    shipped = next(iter(paths))
    checks = {label: parity(Stepper(paths[shipped], spec), steppers[label], rng.integers(0, spec.vocab, 512))
              for label in paths if label != shipped and "DIAG" not in label}
    for s in steppers.values():  # a realistic past: streamed tokens, not zeros
        for t in rng.integers(0, spec.vocab, args.warmup).tolist():
            s.step(t)
    runs = [interleaved(steppers, rng.integers(0, spec.vocab, args.steps).tolist(), args.rounds)
            for _ in range(args.repeats)]
    print_table(nodes, checks, runs)


def print_table(nodes: dict[str, int], checks: dict[str, tuple[float, float]], runs: list[dict[str, np.ndarray]]) -> None:
    shipped = next(iter(nodes))
    p50 = [{label: float(np.percentile(times, 50)) for label, times in res.items()} for res in runs]
    print(f"\n{'graph':42s} nodes max|dlogit| max|dcur|" + "".join(f" | run {r + 1} p50   p99  dp50" for r in range(len(runs))))
    for label, n in nodes.items():
        check = f"{checks[label][0]:11.1e} {checks[label][1]:9.1e}" if label in checks else \
            f"{'reference' if label == shipped else 'not the model':>21s}"
        cells = "".join(f" | {q[label]:9.1f} {np.percentile(res[label], 99):5.1f} {100 * (q[label] / q[shipped] - 1):+5.1f}%"
                        for q, res in zip(p50, runs))
        print(f"{label:42s} {n:5d} {check}{cells}")
    saved = {label.split("DIAG ")[1]: np.mean([q[shipped] - q[label] for q in p50]) for label in nodes if "DIAG" in label}
    print("DIAG = not the model, attribution only; shipped p50 - DIAG p50 (mean of repeats): "
          + "; ".join(f"{what} {us:.1f} us" for what, us in saved.items()))


if __name__ == "__main__":
    main()
