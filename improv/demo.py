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


@dataclass
class DemoResult:
    call: list[Note]  # beats from the call's first note
    response: list[Note]  # same origin
    midi_path: Path | None
    stats: EngineStats
    first_note_grid_error_ms: float | None  # when the answer's first note went out vs its grid point


class Recorder:
    """A port that records ``(t, msg)`` at the engine clock's time (what `FakeMidiOut` does in tests)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, mido.Message]] = []

    def send(self, msg: mido.Message) -> None:
        self.sent.append((self.clock.now(), msg))


def call_events(bpm: float, notes=ODE_TO_JOY, start_beats: float = COUNT_IN_BEATS, velocity: int = 84) -> list:
    spb = 60.0 / bpm
    events = []
    for pitch, onset, dur in notes:
        t_on = (start_beats + onset) * spb
        events += [NoteOn(t_on, 0, pitch, velocity), NoteOff(t_on + dur * LEGATO * spb, 0, pitch)]
    return sorted(events, key=lambda e: e.t_s)


def run_demo(*, model=None, out: str | Path | None = "demo.mid", seed: int = 0, bpm: float = 100.0,
             mode: str = "call", config: str | Path | None = None, settings: Settings | None = None,
             show: bool = True) -> DemoResult:
    """Run one call and its answer (or, with mode "duet", play along) and report it."""
    step_model = _load(model)
    if settings is None:
        overrides = {"time.bpm": bpm, "sampling.seed": seed, "mode.mode": mode}
        if config is None:
            overrides |= {"sampling.pitch_lo": 48, "sampling.pitch_hi": 84}  # a compact roll
        settings = load_settings(config, overrides)
    clock = ManualClock(0.0)
    recorder = Recorder(clock)
    engine = Engine(step_model, settings, clock, recorder)
    events = call_events(settings.time.bpm)
    call_beats = max(o + d for _, o, d in ODE_TO_JOY)
    m = settings.mode
    answer_beats = m.response_beats(call_beats) + m.silence_beats + 2 * m.grid_beats
    end_s = engine.beat_clock.time_at(COUNT_IN_BEATS + call_beats + answer_beats)
    engine.run_until(end_s, events)
    engine.shutdown()
    result = _result(engine, recorder, step_model, out, settings)
    if show:
        print(report(result, step_model, settings))
    return result


def _load(model):
    if model is not None and hasattr(model, "step"):
        return model  # an already loaded model (tests)
    from improv.model_step import StepModel

    step_model = StepModel.load(model)
    step_model.check_live()
    return step_model


def _result(engine: Engine, recorder: Recorder, model, out, settings: Settings) -> DemoResult:
    beats_at = engine.beat_clock.beats_at
    call = [Note(o, d * LEGATO, p, 84) for p, o, d in ODE_TO_JOY]
    response = [Note(n.onset_beats - COUNT_IN_BEATS, n.duration_beats, n.pitch, n.velocity)
                for n in recorded_notes(recorder.sent, beats_at)]
    path = None
    if out is not None:
        from improv.midifile import write_midi

        path = write_midi(out, {"player": call, "improv": response}, bpm=settings.time.bpm)
    error = None
    ons = [(t, m) for t, m in recorder.sent if m.type == "note_on" and m.velocity > 0]
    if ons and engine.improviser.mode == "call":
        grid = engine.beat_clock.time_at(round(beats_at(ons[0][0]) / settings.mode.grid_beats) * settings.mode.grid_beats)
        error = (ons[0][0] - grid) * 1000.0
    return DemoResult(call, response, path, engine.stats(), error)


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
