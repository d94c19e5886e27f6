"""Piano rolls: a text one for the terminal (`improv demo`, the live view) and a PNG one.

Both take *parts*: a sequence of note lists (e.g. ``[seed, continuation]``), drawn in different
glyphs / colours, with pitch rows (high at the top, only the range the notes use) and time columns.

The PNG encoder is the smallest valid one (numpy + zlib + struct: 8-bit RGB, filter 0 on every
row, one IDAT chunk), so improv/ needs no imaging library.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from improv.keys import NOTE_NAMES
from improv.tokens import Note

# (onset glyph, held glyph) per part; plain ASCII fallbacks in ASCII_GLYPHS
GLYPHS = (("█", "▀"), ("▓", "▒"), ("●", "─"), ("◆", "═"))
ASCII_GLYPHS = (("#", "="), ("@", "-"), ("O", "~"), ("X", "+"))
STYLES = ("bold cyan", "bold magenta", "bold green", "bold yellow")
# RGB per part for the PNG: seed blue, continuation orange, then green, purple
COLOURS = ((66, 133, 244), (244, 140, 36), (52, 168, 83), (156, 39, 176))
BACKGROUND, BLACK_KEY_ROW, BEAT_LINE, BAR_LINE = (255, 255, 255), (242, 242, 246), (215, 215, 222), (150, 150, 160)
AXIS_TEXT = (60, 60, 70)


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> scientific name, e.g. 60 -> "C4"."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _as_parts(parts: Sequence[Sequence[Note]] | Sequence[Note]) -> list[Sequence[Note]]:
    if parts and isinstance(parts[0], Note):
        return [parts]  # one plain list of notes
    return list(parts)


def _bounds(parts: list[Sequence[Note]], lo: int | None, hi: int | None, end_beats: float | None):
    pitches = [n.pitch for part in parts for n in part]
    lo = lo if lo is not None else (min(pitches) if pitches else 60)
    hi = hi if hi is not None else (max(pitches) if pitches else 72)
    if end_beats is None:
        end_beats = max((n.onset_beats + n.duration_beats for part in parts for n in part), default=4.0)
    return lo, max(lo, hi), end_beats


def roll_cells(
    parts: Sequence[Sequence[Note]] | Sequence[Note],
    *,
    steps_per_beat: int = 4,
    start_beats: float = 0.0,
    end_beats: float | None = None,
    lo: int | None = None,
    hi: int | None = None,
) -> tuple[np.ndarray, int]:
    """(rows, columns) int8 cells, row 0 = pitch `hi`: 0 empty, 2k+1 part k's onset, 2k+2 held.
    Returns the cells and the lowest pitch (`hi` = lowest + rows - 1). Later parts draw on top."""
    parts = _as_parts(parts)
    lo, hi, end_beats = _bounds(parts, lo, hi, end_beats)
    columns = max(1, math.ceil((end_beats - start_beats) * steps_per_beat - 1e-9))
    cells = np.zeros((hi - lo + 1, columns), dtype=np.int8)
    for k, part in enumerate(parts):
        for n in part:
            if not lo <= n.pitch <= hi:
                continue
            a = round((n.onset_beats - start_beats) * steps_per_beat)
            b = max(a + 1, round((n.onset_beats + n.duration_beats - start_beats) * steps_per_beat))
            row = hi - n.pitch
            if b <= 0 or a >= columns:
                continue
            cells[row, max(a, 0) : min(b, columns)] = 2 * k + 2
            if a >= 0:
                cells[row, a] = 2 * k + 1
    return cells, lo


def text_roll(
    parts: Sequence[Sequence[Note]] | Sequence[Note],
    *,
    steps_per_beat: int = 4,
    start_beats: float = 0.0,
    end_beats: float | None = None,
    lo: int | None = None,
    hi: int | None = None,
    ascii_only: bool = False,
) -> str:
    """A plain-text piano roll: one row per pitch (name at the left), one column per 1/steps_per_beat
    beat, ``|`` at each beat where nothing sounds. Rows for C are marked so octaves are easy to see."""
    return "\n".join(text for text, _ in _rows(parts, steps_per_beat, start_beats, end_beats, lo, hi, ascii_only))


def rich_roll(
    parts: Sequence[Sequence[Note]] | Sequence[Note],
    *,
    steps_per_beat: int = 4,
    start_beats: float = 0.0,
    end_beats: float | None = None,
    lo: int | None = None,
    hi: int | None = None,
):
    """The same roll as a `rich.text.Text`, each part in its own colour (`STYLES`)."""
    from rich.text import Text

    out = Text()
    for i, (text, owners) in enumerate(_rows(parts, steps_per_beat, start_beats, end_beats, lo, hi, False)):
        if i:
            out.append("\n")
        for ch, owner in zip(text, owners):
            out.append(ch, style=STYLES[owner % len(STYLES)] if owner >= 0 else "dim")
    return out


def _rows(parts, steps_per_beat, start_beats, end_beats, lo, hi, ascii_only):
    """Yields (row text, owner part per character, -1 for none)."""
    cells, lo = roll_cells(parts, steps_per_beat=steps_per_beat, start_beats=start_beats, end_beats=end_beats, lo=lo, hi=hi)
    glyphs = ASCII_GLYPHS if ascii_only else GLYPHS
    hi = lo + len(cells) - 1
    for r, row in enumerate(cells):
        pitch = hi - r
        label = f"{pitch_name(pitch):>4} " if pitch % 12 == 0 or r == 0 or r == len(cells) - 1 else "     "
        chars, owners = list(label), [-1] * len(label)
        for c, cell in enumerate(row):
            if cell:
                part = (cell - 1) // 2
                chars.append(glyphs[part % len(glyphs)][(cell - 1) % 2])
                owners.append(part)
            else:
                chars.append("|" if c % steps_per_beat == 0 else ("-" if pitch % 12 == 0 else "."))
                owners.append(-1)
        yield "".join(chars), owners


# --------------------------------------------------------------------------- PNG


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (8-bit truecolour, no interlace)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected a non-empty (H, W, 3) image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    raw = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # a leading 0 per row: filter "none"
    raw[:, 1:] = rgb.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def roll_image(
    parts: Sequence[Sequence[Note]] | Sequence[Note],
    *,
    labels: Sequence[str] = (),
    pixels_per_beat: int = 32,
    pixels_per_pitch: int = 6,
    beats_per_bar: int = 4,
    margin_pitches: int = 2,
) -> np.ndarray:
    """(H, W, 3) uint8 piano roll: black-key rows shaded, beat and bar lines, each part in its
    `COLOURS` entry with a 1-pixel gap before each onset so repeated notes stay apart; pitch names
    at every C on the left, bar numbers on top, and a legend naming each part (`labels`)."""
    parts = _as_parts(parts)
    lo, hi, end_beats = _bounds(parts, None, None, None)
    lo, hi = max(0, lo - margin_pitches), min(127, hi + margin_pitches)
    width = max(1, math.ceil(end_beats * pixels_per_beat))
    roll = np.empty(((hi - lo + 1) * pixels_per_pitch, width, 3), dtype=np.uint8)
    roll[:] = BACKGROUND
    for pitch in range(lo, hi + 1):
        if pitch % 12 in (1, 3, 6, 8, 10):
            y = (hi - pitch) * pixels_per_pitch
            roll[y : y + pixels_per_pitch] = BLACK_KEY_ROW
    for beat in range(math.ceil(end_beats) + 1):
        x = beat * pixels_per_beat
        if x < width:
            roll[:, x] = BAR_LINE if beat % beats_per_bar == 0 else BEAT_LINE
    for k, part in enumerate(parts):
        colour = COLOURS[k % len(COLOURS)]
        for n in part:
            x0 = round(n.onset_beats * pixels_per_beat)
            x1 = max(x0 + 2, round((n.onset_beats + n.duration_beats) * pixels_per_beat))
            y = (hi - n.pitch) * pixels_per_pitch
            roll[y + 1 : y + pixels_per_pitch, x0 + 1 : min(x1, width)] = colour
    return _framed(roll, lo, hi, pixels_per_pitch, pixels_per_beat * beats_per_bar, labels)


def _framed(roll: np.ndarray, lo: int, hi: int, pixels_per_pitch: int, pixels_per_bar: int,
            labels: Sequence[str]) -> np.ndarray:
    """The roll with its axes: pitch names left, bar numbers above, the legend below."""
    from improv.bitmap_font import HEIGHT, draw

    left, top, line = 40, 16, 2 * HEIGHT + 6
    bottom = 6 + line * len(labels)
    image = np.full((top + roll.shape[0] + bottom, left + roll.shape[1] + 8, 3), 255, dtype=np.uint8)
    image[top : top + roll.shape[0], left : left + roll.shape[1]] = roll
    near_a_c = {p + d for p in range(lo, hi + 1) if p % 12 == 0 for d in range(-2, 3)}
    for pitch in range(lo, hi + 1):
        if pitch % 12 == 0 or (pitch in (lo, hi) and pitch not in near_a_c):  # (labels would overlap)
            y = top + (hi - pitch) * pixels_per_pitch + pixels_per_pitch // 2 - HEIGHT
            draw(image, pitch_name(pitch), 2, y, AXIS_TEXT)
    for bar, x in enumerate(range(0, roll.shape[1], pixels_per_bar), start=1):
        draw(image, str(bar), left + x + 2, 2, AXIS_TEXT)
    for k, label in enumerate(labels):
        y = top + roll.shape[0] + 6 + k * line
        image[y : y + 2 * HEIGHT, left : left + 12] = COLOURS[k % len(COLOURS)]
        draw(image, label, left + 18, y, AXIS_TEXT)
    return image


def write_png(path: str | Path, parts: Sequence[Sequence[Note]] | Sequence[Note], **kwargs) -> Path:
    """Draw `parts` with `roll_image` (keyword arguments go there) and save as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(roll_image(parts, **kwargs)))
    return path
