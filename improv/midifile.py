"""Notes (in beats) <-> standard MIDI files, via mido.

Writing makes a type-1 file: track 0 holds the tempo and time signature, then one named track per
part (e.g. "player" and "improv"), each on its own channel. Times are integer ticks at
`ticks_per_beat` (480 by default, so 16ths, triplets and the tokens' 1/12-beat grid are exact).
Every note-on gets its note-off: a note re-struck while it still sounds is cut at the new onset,
and at one tick, note-offs go before note-ons.

Reading gives notes in beats (file ticks / the file's ticks_per_beat), so tempo changes do not
move notes; velocity-0 note-ons end notes, drums (channel 10) are skipped by default, and notes
still open at the end of a track end there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import mido

from improv.errors import DataError
from improv.pairing import NotePairer, Sounded
from improv.tokens import Note

DEFAULT_BPM = 120.0
TICKS_PER_BEAT = 480
DRUM_CHANNEL = 9


def write_midi(
    path: str | Path,
    tracks: Mapping[str, Sequence[Note]] | Sequence[Note],
    *,
    bpm: float = DEFAULT_BPM,
    ticks_per_beat: int = TICKS_PER_BEAT,
    programs: Mapping[str, int] | None = None,
) -> Path:
    """Write `tracks` ({name: notes}, or one list of notes for a single track named "notes")."""
    if not bpm > 0:
        raise ValueError(f"bpm must be > 0, got {bpm}")
    if not isinstance(tracks, Mapping):
        tracks = {"notes": tracks}
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(_conductor(bpm))
    channels = [c for c in range(16) if c != DRUM_CHANNEL]
    for i, (name, notes) in enumerate(tracks.items()):
        program = (programs or {}).get(name)
        midi.tracks.append(_note_track(name, notes, channels[i % len(channels)], ticks_per_beat, program))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(str(path))
    return path


def _conductor(bpm: float) -> mido.MidiTrack:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _note_events(notes: Iterable[Note], tpb: int) -> list[tuple[int, int, int, int]]:
    """(tick, 0 = off / 1 = on, pitch, velocity), sorted; same-pitch overlaps cut at the re-strike."""
    by_pitch: dict[int, list[tuple[int, int, int]]] = {}
    for n in notes:
        on = max(0, round(n.onset_beats * tpb))
        off = max(on + 1, round((n.onset_beats + n.duration_beats) * tpb))
        by_pitch.setdefault(int(n.pitch), []).append((on, off, int(n.velocity)))
    events = []
    for pitch, spans in by_pitch.items():
        spans.sort()
        for (on, off, vel), nxt in zip(spans, spans[1:] + [None]):
            if nxt is not None:
                if nxt[0] == on:
                    continue  # two notes struck at once on one pitch: keep the later (longer) one
                off = min(off, nxt[0])
            events += [(on, 1, pitch, max(1, min(127, vel))), (off, 0, pitch, 0)]
    events.sort()
    return events


def _note_track(name: str, notes: Iterable[Note], channel: int, tpb: int, program: int | None) -> mido.MidiTrack:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    if program is not None:
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    now = 0
    for tick, is_on, pitch, vel in _note_events(notes, tpb):
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=channel, note=pitch, velocity=vel, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def read_midi_tracks(path: str | Path, *, skip_drums: bool = True) -> dict[str, list[Note]]:
    """{track name: notes in beats}; unnamed tracks are called "track N"; empty tracks left out."""
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise DataError(f"{path}: cannot read it as a MIDI file ({err}); give a standard .mid file") from err
    if midi.type == 2:
        raise DataError(f"{path}: type-2 MIDI files (independent patterns) are not supported; save it as type 0 or 1")
    tracks: dict[str, list[Note]] = {}
    for i, track in enumerate(midi.tracks):
        name = next((m.name for m in track if m.type == "track_name" and m.name.strip()), f"track {i}")
        notes = _track_notes(track, midi.ticks_per_beat, skip_drums)
        if notes:
            key = name if name not in tracks else f"{name} ({i})"
            tracks[key] = notes
    return tracks


def read_midi_tempo(path: str | Path) -> float | None:
    """The file's first tempo (bpm), None if it sets none (MIDI's default is then 120)."""
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise DataError(f"{path}: cannot read it as a MIDI file ({err}); give a standard .mid file") from err
    tempo = next((m.tempo for track in midi.tracks for m in track if m.type == "set_tempo"), None)
    return None if tempo is None else round(mido.tempo2bpm(tempo), 3)


def read_midi(path: str | Path, *, skip_drums: bool = True) -> list[Note]:
    """All notes of a MIDI file in beats, every track merged, sorted by onset then pitch."""
    notes = [n for track in read_midi_tracks(path, skip_drums=skip_drums).values() for n in track]
    notes.sort(key=lambda n: (n.onset_beats, n.pitch))
    return notes


def track_sounded(track: mido.MidiTrack, skip_drums: bool = True) -> list[Sounded]:
    """One track's notes in ticks: a re-strike ends the sounding note, open notes end with the track."""
    pairer = NotePairer(restrike_ends=True)
    now = 0
    for msg in track:
        now += msg.time
        if msg.type in ("note_on", "note_off") and not (skip_drums and msg.channel == DRUM_CHANNEL):
            pairer.feed(now, msg)
    return pairer.notes(now)


def _track_notes(track: mido.MidiTrack, tpb: int, skip_drums: bool) -> list[Note]:
    return [Note(n.start / tpb, max(1, n.end - n.start) / tpb, n.pitch, n.velocity)
            for n in track_sounded(track, skip_drums)]
