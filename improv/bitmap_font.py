"""A 3x5-pixel font for the labels on improv's PNG piano rolls (improv/ draws without an imaging
library): digits, capitals, a flat sign and a little punctuation; lower case is drawn as capitals."""

from __future__ import annotations

import numpy as np

WIDTH, HEIGHT = 3, 5
_ROWS = {  # five rows of three pixels per glyph, "#" on
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###",
    "3": "### ..# ### ..# ###", "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###", "7": "### ..# ..# ..# ..#", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###", "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.",
    "C": ".## #.. #.. #.. .##", "D": "##. #.# #.# #.# ##.", "E": "### #.. ##. #.. ###",
    "F": "### #.. ##. #.. #..", "G": ".## #.. #.# #.# .##", "H": "#.# #.# ### #.# #.#",
    "I": "### .#. .#. .#. ###", "J": "..# ..# ..# #.# .#.", "K": "#.# #.# ##. #.# #.#",
    "L": "#.. #.. #.. #.. ###", "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#",
    "O": ".#. #.# #.# #.# .#.", "P": "##. #.# ##. #.. #..", "Q": ".#. #.# #.# ##. .##",
    "R": "##. #.# ##. #.# #.#", "S": ".## #.. .#. ..# ##.", "T": "### .#. .#. .#. .#.",
    "U": "#.# #.# #.# #.# ###", "V": "#.# #.# #.# #.# .#.", "W": "#.# #.# ### ### #.#",
    "X": "#.# #.# .#. #.# #.#", "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###",
    " ": "... ... ... ... ...", "#": "#.# ### #.# ### #.#", "(": ".#. #.. #.. #.. .#.",
    ")": ".#. ..# ..# ..# .#.", ":": "... .#. ... .#. ...", "-": "... ... ### ... ...",
    ".": "... ... ... ... .#.", "b": "#.. #.. ##. #.# ##.", "?": "### ..# .#. ... .#.",
}
GLYPHS = {ch: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _ROWS.items()}


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """(HEIGHT * scale, len * (WIDTH + 1) * scale) bool: `text` drawn, one blank column between glyphs."""
    cells = [GLYPHS.get(ch if ch == "b" else ch.upper(), GLYPHS["?"]) for ch in text]
    spaced = [np.pad(g, ((0, 0), (0, 1))) for g in cells] or [np.zeros((HEIGHT, 1), dtype=bool)]
    return np.kron(np.hstack(spaced), np.ones((scale, scale), dtype=bool))


def draw(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: int = 2) -> None:
    """Draw `text` into (H, W, 3) `image` with its top-left corner at (x, y), clipped to the image."""
    mask = text_mask(text, scale)
    h, w = mask.shape
    y0, x0, y1, x1 = max(0, y), max(0, x), min(image.shape[0], y + h), min(image.shape[1], x + w)
    if y1 > y0 and x1 > x0:
        region = image[y0:y1, x0:x1]
        region[mask[y0 - y:y1 - y, x0 - x:x1 - x]] = colour
