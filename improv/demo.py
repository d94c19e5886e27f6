"""`improv demo`: the real engine, in-process, on a simulated clock - no MIDI system, no waiting.

A built-in call (the opening of Beethoven's "Ode to Joy", four bars) is fed to the same `Engine`
the daemon uses, on a `ManualClock`, so the whole exchange takes milliseconds of real time but
follows the same decisions and deadlines as a live session: the answer is prepared during the
silence and starts on the grid. What the scheduler sends lands in a recorder (a port that keeps
``(t, msg)``); the call and the answer are printed as a piano roll and written to a MIDI file,
the player and improv as two tracks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import mido

from improv.clock import ManualClock
from improv.engine import Engine, EngineStats
from improv.events import NoteOff, NoteOn
from improv.pairing import pair_messages
from improv.settings import Settings, load_settings
from improv.tokens import Note

# (pitch, onset beats, duration beats): E E F G | G F E D | C C D E | E. D D
ODE_TO_JOY = (
    (64, 0, 1), (64, 1, 1), (65, 2, 1), (67, 3, 1), (67, 4, 1), (65, 5, 1), (64, 6, 1), (62, 7, 1),
    (60, 8, 1), (60, 9, 1), (62, 10, 1), (64, 11, 1), (64, 12, 1.5), (62, 13.5, 0.5), (62, 14, 2),
)
COUNT_IN_BEATS = 4.0  # the call starts on the second bar
LEGATO = 0.9  # the player releases each key a little before the next note
DEMO_VELOCITY = 84


@dataclass
class DemoResult:
    call: list[Note]  # beats from the call's first note
    response: list[Note]  # same origin
    midi_path: Path | None
    stats: EngineStats
    first_note_grid_error_ms: float | None  # when the answer's first note went out vs its grid point


@dataclass(frozen=True)
class DemoOptions:
    """What `improv demo` plays and where it writes."""

    out: str | Path | None = "demo.mid"
    png: str | Path | None = None
    seed: int = 0
    bpm: float | None = None  # None: the call file's tempo, else 100
    mode: str = "call"
    config: str | Path | None = None
    call: str | Path | None = None  # a MIDI file to answer; None: the built-in phrase
    track: int | None = None  # which track of it (index among the tracks with notes); None: the first


class Recorder:
    """A port that records ``(t, msg)`` at the engine clock's time (what `FakeMidiOut` does in tests)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, mido.Message]] = []

    def send(self, msg: mido.Message) -> None:
        self.sent.append((self.clock.now(), msg))


def built_in_call() -> list[Note]:
    return [Note(o, d * LEGATO, p, DEMO_VELOCITY) for p, o, d in ODE_TO_JOY]


def call_events(bpm: float, notes: list[Note], start_beats: float = COUNT_IN_BEATS) -> list:
    """The call's notes as a player sends them: at one time, the keys released before those
    struck (a key struck again is released first). Times are rounded to the ns, so that float
    noise in a note's end never puts its release after the same key struck again."""
    spb = 60.0 / bpm
    events = []
    for n in notes:
        t_on = round((start_beats + n.onset_beats) * spb, 9)
        t_off = round((start_beats + n.onset_beats + n.duration_beats) * spb, 9)
        events += [NoteOn(t_on, 0, n.pitch, n.velocity), NoteOff(t_off, 0, n.pitch)]
    return sorted(events, key=lambda e: (e.t_s, isinstance(e, NoteOn)))


def answer_call(step_model, settings: Settings, call: list[Note]) -> tuple[Engine, Recorder]:
    """The engine on a simulated clock, fed `call` (beats from its first note, a bar of count-in
    before it) and run until its answer (or the duet along it) is over."""
    clock = ManualClock(0.0)
    recorder = Recorder(clock)
    engine = Engine(step_model, settings, clock, recorder)
    call_beats = max(n.onset_beats + n.duration_beats for n in call)
    m = settings.mode
    answer_beats = m.response_beats(call_beats) + m.silence_beats + 2 * m.grid_beats
    end_s = engine.beat_clock.time_at(COUNT_IN_BEATS + call_beats + answer_beats)
    engine.run_until(end_s, call_events(settings.time.bpm, call))
    engine.shutdown()
    return engine, recorder


def run_demo(model=None, options: DemoOptions = DemoOptions(), settings: Settings | None = None,
             show: bool = True) -> DemoResult:
    """Answer one call (or, with mode "duet", play along with it) and report it."""
    step_model = _load(model)
    call, file_bpm = (built_in_call(), None) if options.call is None else load_call(options.call, options.track)
    if settings is None:
        bpm = options.bpm or file_bpm or 100.0
        overrides = {"time.bpm": bpm, "sampling.seed": options.seed, "mode.mode": options.mode}
        if options.config is None and options.call is None:
            overrides |= {"sampling.pitch_lo": 48, "sampling.pitch_hi": 84}  # a compact roll
        settings = load_settings(options.config, overrides)
    engine, recorder = answer_call(step_model, settings, call)
    result = _result(engine, recorder, call, options, settings)
    if show:
        print(report(result, step_model, settings))
    return result


def load_call(path: str | Path, track: int | None) -> tuple[list[Note], float | None]:
    """The notes of a MIDI file's track (the first with notes, or `track`), from its first note,
    and the file's tempo; a missing, unreadable or empty file is a `DataError`."""
    from improv.errors import ConfigError, ImprovError
    from improv.midifile import read_midi_tempo, read_midi_tracks

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file; give a MIDI file to answer with --call")
    try:
        tracks = [notes for notes in read_midi_tracks(path).values() if notes]
        tempo = read_midi_tempo(path)
    except ImprovError as err:  # the reader's DataError: here a bad option, exit 2
        raise ConfigError(str(err)) from err
    if not tracks:
        raise ConfigError(f"{path}: the file has no notes; give a MIDI file with a melody or chords")
    if track is not None and not 0 <= track < len(tracks):
        raise ConfigError(f"{path}: --track {track} does not exist; the file has {len(tracks)} tracks with "
                        f"notes, use 0..{len(tracks) - 1}")
    notes = tracks[track or 0]
    first = min(n.onset_beats for n in notes)
    call = [Note(n.onset_beats - first, n.duration_beats, n.pitch, n.velocity) for n in notes]
    return call, tempo


def _load(model):
    if model is not None and hasattr(model, "step"):
        return model  # an already loaded model (tests)
    from improv.model_step import StepModel

    step_model = StepModel.load(model)
    step_model.check_live()
    return step_model


def _result(engine: Engine, recorder: Recorder, call: list[Note], options: DemoOptions,
            settings: Settings) -> DemoResult:
    beats_at = engine.beat_clock.beats_at
    response = answer_notes(engine, recorder)
    path = None
    if options.out is not None:
        from improv.midifile import write_midi

        path = write_midi(options.out, {"player": call, "improv": response}, bpm=settings.time.bpm)
    if options.png is not None:
        from improv.pianoroll import write_png

        write_png(options.png, [call, response], labels=("call (player)", "answer (improv)"))
    error = None
    ons = [(t, m) for t, m in recorder.sent if m.type == "note_on" and m.velocity > 0]
    if ons and engine.improviser.mode == "call":
        grid = engine.beat_clock.time_at(round(beats_at(ons[0][0]) / settings.mode.grid_beats) * settings.mode.grid_beats)
        error = (ons[0][0] - grid) * 1000.0
    return DemoResult(call, response, path, engine.stats(), error)


def answer_notes(engine: Engine, recorder: Recorder) -> list[Note]:
    """What `answer_call` recorded improv playing, in beats from the call's first note."""
    return [Note(n.onset_beats - COUNT_IN_BEATS, n.duration_beats, n.pitch, n.velocity)
            for n in recorded_notes(recorder.sent, engine.beat_clock.beats_at)]


def recorded_notes(sent: list[tuple[float, mido.Message]], beats_at) -> list[Note]:
    """Pair recorded note-ons and note-offs into notes (beats on the engine's beat clock)."""
    notes, _ = pair_messages(sent)
    return [Note(beats_at(n.start), beats_at(n.end) - beats_at(n.start), n.pitch, n.velocity) for n in notes]


def report(r: DemoResult, model, settings: Settings) -> str:
    from improv.pianoroll import text_roll

    ascii_only = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "") != "utf8"
    roll = text_roll([r.call, r.response], steps_per_beat=2, ascii_only=ascii_only)
    glyphs = ("#", "@") if ascii_only else ("█", "▓")
    s = r.stats
    lines = [
        f"improv demo: model {getattr(model, 'name', '?')} ({getattr(model, 'kind', '?')}), "
        f"{settings.time.bpm:g} bpm, {settings.mode.mode} mode, seed {settings.sampling.seed}",
        f"call {glyphs[0]} ({len(r.call)} notes), answer {glyphs[1]} ({len(r.response)} notes); "
        "one column = an 8th note, | marks the beats",
        roll,
    ]
    if r.first_note_grid_error_ms is not None:
        lines.append(f"answer's first note: {r.first_note_grid_error_ms:+.3f} ms from its grid point")
    if s.step_ms_p50 is not None:
        lines.append(f"model step: {s.step_ms_p50:.3f} ms p50, {s.step_ms_p99:.3f} ms p99 (real time, this machine)")
    if r.midi_path is not None:
        lines.append(f"wrote {r.midi_path} (tracks: player, improv)")
    return "\n".join(lines)
