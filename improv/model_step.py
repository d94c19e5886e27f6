"""One ONNX step: (token, state) -> (logits, state). The state lives here, outside the graph.

LSTM: h and c go in and come out. WaveNet ("fast WaveNet generation"): the graph takes, per layer,
that layer's input from `dilations[l]` steps ago (`past`, shape (L, C)) and returns each layer's
input at this step (`current`); one numpy ring buffer per model keeps the history, so a step costs
O(layers), never O(receptive field). See docs/DESIGN.md for the sidecar format.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from improv.errors import ModelError
from improv.tokens import Vocabulary
from improv.voicing import writes_chords

FORMAT = "improv-step-model"
FORMAT_VERSION = 1
DEFAULT_MODEL = "general-lstm"
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def models_dir() -> Path:
    """Where named models live: $IMPROV_MODELS, else the repository's models/ folder."""
    return Path(os.environ.get("IMPROV_MODELS", REPO_MODELS))


def resolve_model_path(path: str | Path | None) -> Path:
    """A model folder from a folder, its model.json / model.onnx, or a name under models/."""
    if path is None or str(path) == "":
        path = DEFAULT_MODEL
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.exists() and not p.is_absolute() and len(p.parts) == 1:
        p = models_dir() / p
    if not (p / "model.json").is_file():
        known = sorted(d.name for d in models_dir().glob("*") if (d / "model.json").is_file())
        hint = f"known models: {', '.join(known)}" if known else "train and export one with `improv train` + `improv export`"
        raise ModelError(f"no model at {path} (no model.json there); {hint}")
    return p


@dataclass
class StepState:
    """Everything a model needs to continue a sequence. `copy()` is cheap enough per response."""

    tensors: dict[str, np.ndarray]  # LSTM: {"h_in": ..., "c_in": ...}
    history: np.ndarray | None = None  # WaveNet: (L, depth, C) ring buffer of layer inputs
    position: int = 0  # tokens consumed so far

    def copy(self) -> StepState:
        hist = None if self.history is None else self.history.copy()
        return StepState({k: v.copy() for k, v in self.tensors.items()}, hist, self.position)

    def copy_into(self, other: StepState) -> None:
        """`other` made this state, into its own buffers (a copy of this state to begin with)."""
        for name, value in self.tensors.items():
            np.copyto(other.tensors[name], value)
        if self.history is not None:
            np.copyto(other.history, self.history)
        other.position = self.position


class StepModel:
    """An exported step model and its sidecar, checked against each other on load."""

    def __init__(self, folder: Path, meta: dict, session) -> None:
        self.folder = folder
        self.meta = meta
        self.session = session
        self.name: str = meta.get("name", folder.name)
        self.kind: str = meta["kind"]
        self.vocab = Vocabulary.from_dict(meta["vocabulary"])
        self.receptive_field: int | None = meta.get("receptive_field")
        self._token_name = meta["token_input"]
        self._logits_name = meta["logits_output"]
        self._state = [(s["input"], s["output"], tuple(s["shape"])) for s in meta.get("state", [])]
        self._queues = meta.get("queues")
        self._outputs = [self._logits_name] + [out for _, out, _ in self._state]
        self._token = np.zeros(1, dtype=np.int64)
        if self._queues:
            self._outputs.append(self._queues["output"])
            self._dilations = np.asarray(self._queues["dilations"], dtype=np.int64)
            self._layers = np.arange(len(self._dilations))
            self._depth = int(self._dilations.max())
            # position % depth -> rows of history.reshape(L * depth, C) written dilations[l] steps ago
            slots = (np.arange(self._depth)[:, None] - self._dilations[None, :]) % self._depth  # (depth, L)
            self._gather_rows = [np.ascontiguousarray(self._layers * self._depth + row, dtype=np.intp) for row in slots]
        # The fast path: onnxruntime IO binding onto buffers allocated once here, so a step allocates
        # and converts nothing, in a closure that touches few Python objects (measured: docs/TIMING.md).
        # One caller at a time uses the buffers (a non-blocking lock); a concurrent caller, or a session
        # that cannot be bound, takes `run`.
        self._io_lock = threading.Lock()
        self._fast = None

        def bound_step():
            """The fast step: (token, state) -> logits through IO-bound, preallocated buffers."""
            io = session.io_binding()
            width = len(self.vocab)
            token_buf = self._token
            logits_buf = np.zeros((1, width), dtype=np.float32)
            io.bind_input(self._token_name, "cpu", 0, np.int64, [1], token_buf.ctypes.data)
            io.bind_output(self._logits_name, "cpu", 0, np.float32, [1, width], logits_buf.ctypes.data)
            tensors = []  # (state input name, input buffer, output buffer)
            for name, out, shape in self._state:
                buf_in, buf_out = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
                io.bind_input(name, "cpu", 0, np.float32, list(shape), buf_in.ctypes.data)
                io.bind_output(out, "cpu", 0, np.float32, list(shape), buf_out.ctypes.data)
                tensors.append((name, buf_in, buf_out))
            queue = bool(self._queues)
            if queue:
                rows = (len(self._dilations), int(self._queues["channels"]))
                past, current = np.zeros(rows, dtype=np.float32), np.zeros(rows, dtype=np.float32)
                io.bind_input(self._queues["input"], "cpu", 0, np.float32, list(rows), past.ctypes.data)
                io.bind_output(self._queues["output"], "cpu", 0, np.float32, list(rows), current.ctypes.data)
                gather, depth = self._gather_rows, self._depth
            run, logits = session.run_with_iobinding, logits_buf[0]

            def step(token: int, state: StepState) -> np.ndarray:
                token_buf[0] = token
                for name, buf_in, _ in tensors:
                    np.copyto(buf_in, state.tensors[name])
                if queue:
                    history, slot = state.history, state.position % depth
                    flat = history.reshape(-1, history.shape[-1])  # (L * depth, C)
                    flat.take(gather[slot], 0, past, "clip")  # into the bound buffer; "clip": no temporary copy
                run(io)
                for name, _, buf_out in tensors:
                    state.tensors[name] = buf_out.copy()
                if queue:
                    history[:, slot] = current
                state.position += 1
                return logits.copy()  # callers keep logits across steps: never hand out the buffer

            return step

        try:
            self._fast = bound_step()
        except Exception:  # noqa: BLE001 - no binding means the plain path, never a failed load
            self._fast = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1) -> StepModel:
        """The model at `path` (see `resolve_model_path`), checked; every failure is a `ModelError`
        that names the file."""
        folder = resolve_model_path(path)
        meta = _read_sidecar(folder / "model.json")
        onnx_path = folder / meta.get("onnx_file", "model.onnx")
        _check_hash(onnx_path, meta)
        session = _open_session(onnx_path, threads)
        sidecar = folder / "model.json"
        try:
            model = cls(folder, meta, session)
        except ModelError as err:  # e.g. a malformed vocabulary: name the file it came from
            raise ModelError(f"{sidecar}: {err}") from err
        except (KeyError, TypeError, ValueError, IndexError) as err:  # what _read_sidecar does not check
            raise ModelError(f"{sidecar}: malformed ({type(err).__name__}: {err}); "
                             "re-export the model with `improv export`") from err
        model._check_graph(onnx_path)
        return model

    def check_live(self) -> None:
        """Raise unless the live engine can play this model: it needs an event-scheme vocabulary
        (the grid scheme of the JSB benchmark is not streamable)."""
        scheme = self.vocab.config.scheme
        if scheme != "event":
            raise ModelError(f"{self.folder / 'model.json'}: a {scheme}-scheme model cannot play live; "
                             "improv run and improv demo need an event-scheme model (e.g. models/bach-lstm)")

    def _check_graph(self, onnx_path: Path) -> None:
        """Raise unless the graph has every input and output the sidecar names, its logits the
        vocabulary's width and its state inputs the sidecar's shapes: a mismatch found here is one
        line at load, not an onnxruntime error in the middle of playing."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        expected_in = [self._token_name] + [i for i, _, _ in self._state]
        expected_out = list(self._outputs)
        if self._queues:
            expected_in.append(self._queues["input"])
        missing = [n for n in expected_in if n not in inputs] + [n for n in expected_out if n not in outputs]
        if missing:
            raise ModelError(f"{onnx_path}: graph lacks {', '.join(missing)} named in model.json; re-export the model")
        width = outputs[self._logits_name][-1]
        if isinstance(width, int) and width != len(self.vocab):
            raise ModelError(
                f"{onnx_path}: logits have {width} classes but the sidecar vocabulary has {len(self.vocab)}; "
                "the sidecar does not belong to this model, re-export it"
            )
        shapes = [(name, list(shape)) for name, _, shape in self._state]
        if self._queues:  # WaveNet: one row per layer of `channels` values
            shapes.append((self._queues["input"], [len(self._dilations), int(self._queues["channels"])]))
        for name, shape in shapes:
            if list(inputs[name]) != shape:
                raise ModelError(f"{onnx_path}: state {name} is {inputs[name]} in the graph, {shape} in model.json; "
                                 "re-export the model")

    # ------------------------------------------------------------------ stepping
    @functools.cached_property
    def writes_chords(self) -> bool:
        """Whether the model answers chords with chords (`improv.voicing.writes_chords`, probed once)."""
        return writes_chords(self)

    def new_state(self) -> StepState:
        tensors = {i: np.zeros(shape, dtype=np.float32) for i, _, shape in self._state}
        history = None
        if self._queues:
            history = np.zeros((len(self._dilations), self._depth, self._queues["channels"]), dtype=np.float32)
        return StepState(tensors, history)

    def step(self, token: int, state: StepState) -> np.ndarray:
        """Feed one token; returns its (V,) float32 logits and advances `state` in place."""
        fast = self._fast
        if fast is not None and self._io_lock.acquire(False):
            try:
                return fast(token, state)
            finally:
                self._io_lock.release()
        feeds = {self._token_name: np.array([token], dtype=np.int64), **state.tensors}
        if self._queues:
            rows = self._gather_rows[state.position % self._depth]  # slots written dilations[l] steps ago
            feeds[self._queues["input"]] = state.history.reshape(-1, state.history.shape[-1])[rows]
        results = self.session.run(self._outputs, feeds)
        for (name, _, _), value in zip(self._state, results[1:]):
            state.tensors[name] = value
        if self._queues:
            state.history[:, state.position % self._depth] = results[-1]
        state.position += 1
        return results[0][0]

    def feed(self, tokens, state: StepState) -> np.ndarray | None:
        """Feed many tokens; returns the logits after the last one (None if there were none)."""
        logits = None
        for token in tokens:
            logits = self.step(int(token), state)
        return logits


def _read_sidecar(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable sidecar ({err}); re-export the model with `improv export`") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not an improv model sidecar (format {FORMAT!r} expected); re-export the model")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(f"{path}: format version {meta['format_version']} is newer than this improv; upgrade improv")
    for key in ("kind", "vocabulary", "token_input", "logits_output"):
        if key not in meta:
            raise ModelError(f"{path}: missing {key!r}; re-export the model with `improv export`")
    if meta["kind"] not in ("lstm", "wavenet"):
        raise ModelError(f"{path}: unknown model kind {meta['kind']!r}; expected lstm or wavenet")
    return meta


def _check_hash(onnx_path: Path, meta: dict) -> None:
    try:
        data = onnx_path.read_bytes()
    except OSError as err:
        raise ModelError(f"{onnx_path}: cannot read the model ({err.strerror}); re-export it") from err
    expected = meta.get("onnx_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelError(f"{onnx_path}: contents do not match the sha256 in model.json (corrupt or replaced); re-export it")


def session_options(threads: int = 1):
    """The onnxruntime settings of every improv session: `threads` intra-op threads (one: a step
    is tiny, hand-offs cost more than they save), sequential, all graph optimisations, no
    spinning (idle spinning workers slow everything else on a small machine). Why these, measured:
    docs/TIMING.md."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.enable_mem_pattern = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _open_session(onnx_path: Path, threads: int):
    import onnxruntime as ort

    opts = session_options(threads)
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(f"{onnx_path}: onnxruntime cannot load it ({first}); re-export the model") from err
