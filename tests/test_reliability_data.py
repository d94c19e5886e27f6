"""Bad training data at scale: a folder of ~2000 small MIDI files mixed with corrupt ones, a huge
one, a MIDI "bomb" (45 bytes that claim 10^8 beats), random bytes under every music extension and
files whose parse hangs; a run killed with SIGKILL in the middle of ingestion and run again; and a
real Ctrl-C (SIGINT) to `improv train`, then `--resume`.

Parsers injected through `training.corpus.PARSERS` run in spawned workers, so they live at module
level here (the workers import this module by name).
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mido
import numpy as np
import pytest
from rich.console import Console

from training import corpus
from training.data import load_dataset
from training.encode import MAX_PIECE_TOKENS, EncodeSettings, cache_path, read_entry

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)


# --------------------------------------------------------------------------- injected parsers


def hang_parser(path, normalize_key=False):
    time.sleep(600)


def slow_parse_midi(path, normalize_key=False):
    """The real MIDI parser, slowed down so a run can be killed in the middle."""
    time.sleep(0.004)
    return corpus.parse_midi(path, normalize_key)


def counting_parse_midi(path, normalize_key=False):
    """The real MIDI parser; each call appends the path to $PARSE_LOG (O_APPEND: one line each)."""
    with open(os.environ["PARSE_LOG"], "a") as log:
        log.write(f"{path}\n")
    return corpus.parse_midi(path, normalize_key)


# --------------------------------------------------------------------------- files


def tiny_midi(i: int) -> bytes:
    """A unique little melody (3 notes) as a MIDI file's bytes."""
    track = mido.MidiTrack()
    for k, pitch in enumerate((48 + i % 37, 50 + (i // 37) % 37, 55 + (i // 1369) % 30)):
        track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=120 + 120 * k))
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def smf(events: bytes, tpb: int = 480) -> bytes:
    """A type-0 Standard MIDI File around one track's raw events (end of track appended)."""
    track = events + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpb) + b"MTrk" + struct.pack(">I", len(track)) + track


def huge_midi(notes: int) -> bytes:
    """A valid MIDI file with `notes` notes (an eighth note each at 480 ticks per beat)."""
    pitches = np.random.default_rng(0).integers(40, 90, notes).tolist()
    return smf(b"".join(bytes((0, 0x90, p, 80, 0x81, 0x70, 0x80, p, 0)) for p in pitches))


# two notes 0x0FFFFFFF ticks apart at 1 tick per beat: 45 bytes that claim 268 million beats
MIDI_BOMB = smf(bytes((0, 0x90, 60, 80, 0xFF, 0xFF, 0xFF, 0x7F, 0x80, 60, 0, 0, 0x90, 62, 80,
                       1, 0x80, 62, 0)), tpb=1)


def tiny_folder(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"song{i:04d}.mid" for i in range(count)]
    for i, path in enumerate(paths):
        path.write_bytes(tiny_midi(i))
    return paths


def quiet(**kwargs):
    out = io.StringIO()
    result = load_dataset(console=Console(file=out, width=300), show_progress=False, **kwargs)
    return result, out.getvalue()


def entries(cache: Path) -> list[Path]:
    """The cache's entries (not the temporary files entries are written through)."""
    return sorted(p for p in cache.rglob("*.npz") if not p.name.startswith(".tmp-"))


# --------------------------------------------------------------------------- a messy folder


def test_a_big_messy_folder_finishes_and_lists_every_skip(tmp_path, monkeypatch):
    monkeypatch.setitem(corpus.PARSERS, ".hang", hang_parser)
    folder = tmp_path / "music"
    good = tiny_folder(folder / "good", 2000)
    rng = np.random.default_rng(1)
    bad: dict[str, str] = {}  # file name -> a phrase its skip reason must contain

    def add(name: str, data: bytes, reason: str = "") -> None:
        (folder / "bad" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "bad" / name).write_bytes(data)
        bad[name] = reason

    for i in range(20):
        add(f"random{i:02d}.mid", rng.bytes(int(rng.integers(1, 3000))))
    for i in range(10):
        add(f"truncated{i:02d}.mid", tiny_midi(5000 + i)[: 10 + 4 * i])
    for ext in (".krn", ".abc", ".xml", ".musicxml", ".mxl"):
        for i in range(3):
            add(f"random{i}{ext}", rng.bytes(int(rng.integers(1, 2000))))
    add("empty.mid", b"", "empty file")
    add("text.mid", b"a shopping list, not music\n" * 20)
    add("smpte.mid", b"MThd" + struct.pack(">IHHH", 6, 0, 1, 0xE728) + b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
        "SMPTE")
    add("claims-4gb.mid", b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk\xff\xff\xff\xf0\x00\x90\x3c")
    add("bomb.mid", MIDI_BOMB, "tokens")
    add("garbage-20mb.mid", rng.bytes(20_000_000))
    for i in range(3):
        add(f"stuck{i}.hang", b"anything", "timed out after 3 s (parse killed)")

    start = time.monotonic()
    result, out = quiet(data=[folder], cache_dir=tmp_path / "cache", workers=2, file_timeout_s=3.0)
    elapsed = time.monotonic() - start
    print(f"\n{len(good)} good + {len(bad)} bad files in {elapsed:.1f} s")

    names = [n for split in result.names.values() for n in split]
    assert sorted(names) == sorted(p.as_posix() for p in good)  # every good file, nothing else
    reasons = dict(result.skipped)
    assert set(reasons) == {(folder / "bad" / name).as_posix() for name in bad}
    for name, phrase in bad.items():
        reason = reasons[(folder / "bad" / name).as_posix()]
        assert reason and "\n" not in reason and len(reason) <= 160, (name, reason)
        assert phrase in reason, (name, reason)
    assert f"skipped {len(bad)} of {len(good) + len(bad)} files:" in out
    assert f"... and {len(bad) - 30} more" in out  # the listing is capped, the list is not
    assert elapsed < 60


def test_a_huge_valid_file_is_read_and_a_bomb_is_refused_at_once(tmp_path):
    folder = tmp_path / "music"
    folder.mkdir()
    (folder / "huge.mid").write_bytes(huge_midi(200_000))
    (folder / "bomb.mid").write_bytes(MIDI_BOMB)
    start = time.monotonic()
    result, _ = quiet(data=[folder], cache_dir=tmp_path / "cache", workers=2, file_timeout_s=120)
    assert time.monotonic() - start < 60
    [(name, reason)] = result.skipped
    assert name.endswith("bomb.mid") and f"capped at {MAX_PIECE_TOKENS:,}" in reason
    lengths = [len(ids) for split in result.splits.values() for ids in split]
    assert lengths == [1 + 200_000 * 3]  # BOS + per note ON, SHIFT_6, OFF


# --------------------------------------------------------------------------- SIGKILL mid-ingestion

KILLED_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from training import corpus
    from training.data import load_dataset
    import tests.test_reliability_data as hooks
    corpus.PARSERS[".mid"] = hooks.slow_parse_midi
    corpus.PARSERS[".hang"] = hooks.hang_parser
    load_dataset(data=[Path(sys.argv[1])], cache_dir=Path(sys.argv[2]), workers=2, file_timeout_s=120,
                 show_progress=False)
    print("finished", flush=True)
""")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_run_killed_mid_ingestion_leaves_whole_entries_and_the_rerun_reuses_them(tmp_path, monkeypatch):
    folder, cache = tmp_path / "music", tmp_path / "cache"
    paths = tiny_folder(folder, 2000)
    (folder / "0000-stuck.hang").write_text("x")  # a worker is hanging in it when the kill comes
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(folder), str(cache)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(entries(cache)) < 300:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "ingestion never got going"
            time.sleep(0.02)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must notice by themselves
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid in workers:  # only if the assertion above failed: our own orphans
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert "finished" not in proc.stdout.read()

    settings = EncodeSettings()
    vocab = __import__("improv.tokens").tokens.Vocabulary(settings.token_config)
    cached = {p for p in paths if cache_path(cache, p, settings).exists()}
    assert 300 <= len(cached) < len(paths)
    for entry in entries(cache):  # every entry on disk is whole
        assert read_entry(entry, vocab) is not None, entry
    assert len(list(cache.rglob(".tmp-*"))) <= 1  # at most the one being written at the kill

    from training import encode

    planted = cache / encode.CACHE_FORMAT / "00" / f"{encode._host_prefix()}{proc.pid}-planted.npz"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"PK\x03\x04 half an entry")  # as if the kill had come mid-write, for sure
    parse_log = tmp_path / "parsed.txt"
    monkeypatch.setenv("PARSE_LOG", str(parse_log))
    monkeypatch.setitem(corpus.PARSERS, ".mid", counting_parse_midi)
    (folder / "0000-stuck.hang").unlink()
    result, _ = quiet(data=[folder], cache_dir=cache, workers=2)
    parsed = {Path(line) for line in parse_log.read_text().splitlines()}
    assert parsed == set(paths) - cached  # what the killed run cached is reused, nothing else
    assert not result.skipped
    assert not list(cache.rglob(".tmp-*")), "the killed run's temporary file was not swept"
    monkeypatch.setitem(corpus.PARSERS, ".mid", corpus.parse_midi)
    fresh, _ = quiet(data=[folder], cache_dir=tmp_path / "fresh-cache", workers=2)
    assert result.data_hash == fresh.data_hash  # resumed == never interrupted


def test_a_killed_writer_s_temporary_file_is_swept_but_a_live_one_is_not(tmp_path):
    from training import encode

    bucket = tmp_path / encode.CACHE_FORMAT / "ab"
    bucket.mkdir(parents=True)
    host = encode._host_prefix()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale, live = bucket / f"{host}{dead}-x1.npz", bucket / f"{host}{os.getpid()}-x2.npz"
    foreign = bucket / ".tmp-otherhost-1-x3.npz"
    for path in (stale, live, foreign):
        path.write_bytes(b"half")
    assert encode.sweep_temps(tmp_path) == 1
    assert not stale.exists() and live.exists() and foreign.exists()


def test_an_unwritable_cache_costs_the_caching_not_the_run(tmp_path, monkeypatch):
    from training import encode

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(encode, "write_entry", disk_full)
    tiny_folder(tmp_path / "music", 5)
    result, _ = quiet(data=[tmp_path / "music"], cache_dir=tmp_path / "cache", workers=0)
    assert sum(len(v) for v in result.splits.values()) == 5 and not result.skipped


# --------------------------------------------------------------------------- Ctrl-C while training


def _melodies(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        track = mido.MidiTrack()
        for pitch in rng.integers(55, 80, 48).tolist():
            track.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
            track.append(mido.Message("note_off", note=pitch, velocity=0, time=240))
        mid = mido.MidiFile(ticks_per_beat=480)
        mid.tracks.append(track)
        mid.save(str(folder / f"m{i:02d}.mid"))


def test_sigint_during_improv_train_leaves_a_checkpoint_that_resumes(tmp_path):
    from training.checkpoint import load_checkpoint, model_from_checkpoint

    _melodies(tmp_path / "music", 30)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROV_")}
    env.update(IMPROV_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "improv.cli", "train", "--out", str(out), "--threads", "1", "--workers", "1",
            "--no-progress"]
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(base + ["--model", "lstm", "--data", str(tmp_path / "music"), "--embed", "8",
                                        "--hidden", "16", "--layers", "1", "--batch-size", "1", "--window", "32",
                                        "--epochs", "50", "--patience", "0"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120
            while "epoch 1:" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            time.sleep(0.3)  # into the second epoch
            proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert code == 130, text
    assert "interrupted: saved" in text and "--resume" in text and "Traceback" not in text
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] >= 1 and checkpoint["step"] > 0
    model, vocab = model_from_checkpoint(checkpoint)  # usable as it is
    assert json.loads((out / "metrics.json").read_text())["stopped"] == "interrupted"
    interrupted_history = checkpoint["history"]

    epochs = checkpoint["epoch"] + 1
    resumed = subprocess.run(base + ["--resume", "--epochs", str(epochs)], env=env, capture_output=True,
                             text=True, timeout=180, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] == "epochs" and len(metrics["history"]) == epochs
    keep = ("epoch", "train_nll", "valid_nll", "step")
    assert [{k: r[k] for k in keep} for r in metrics["history"][: len(interrupted_history)]] == [
        {k: r[k] for k in keep} for r in interrupted_history]
    assert metrics["history"][-1]["step"] > checkpoint["step"]
    assert (out / "best.pt").is_file() and metrics["test"]["nll"] is not None

