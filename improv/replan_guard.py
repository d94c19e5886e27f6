"""How far ahead of now the duet's re-plan cuts: at least `min_s`, and long enough for the
generator to deliver the first new note before it is due.

That takes the model steps from the re-plan until the generator's frontier passes the cutoff (the
player's tokens, then the continuation: the most any of the last `WINDOW` re-plans took, counted
in steps so a manual clock sees the same) times the wall time of a step as the engine measured it
(model, sampling and bookkeeping), times a margin. A window, not a decaying maximum: how many
steps a re-plan needs depends on the music, so the rare long ones recur (docs/LIVE.md).
"""

from __future__ import annotations

from collections import deque

MIN_S = 0.005  # never cut closer to now than this


class ReplanGuard:
    MARGIN = 1.5
    WINDOW = 128  # re-plans remembered (two per player note: ~a minute of a busy duet)
    MAX_S = 0.05  # never cut later than this: the line must still follow the player
    PRIOR_STEPS = 10  # until a re-plan has delivered: what bach-lstm takes (the player's 2-3
    # tokens, then the first new note or two)

    def __init__(self, min_s: float = MIN_S, lead_s: float = 0.0) -> None:
        self.min_s = min_s
        self.lead_s = max(0.0, lead_s)  # the scheduler sends this early: cut that much further ahead
        self.step_s = 0.0  # EMA of seconds per model step in the engine's ticks (0 on a manual clock)
        self._delivered: deque[int] = deque(maxlen=self.WINDOW)  # steps each recent re-plan took
        self._mark: int | None = None  # model steps at the last re-plan, until it delivered

    @property
    def steps(self) -> int:
        """The most steps a recent re-plan took to deliver, and never fewer than `PRIOR_STEPS`:
        the first re-plans say little about the long ones to come."""
        return max(self._delivered, default=0) if len(self._delivered) >= self.WINDOW else \
            max(self.PRIOR_STEPS, max(self._delivered, default=0))

    def seconds(self) -> float:
        return self.lead_s + min(self.MAX_S, max(self.min_s, self.MARGIN * self.steps * self.step_s))

    def measured(self, elapsed_s: float, steps: int) -> None:
        """One engine tick took `elapsed_s` for `steps` model steps."""
        if steps > 0:
            per_step = elapsed_s / steps
            self.step_s = per_step if self.step_s == 0.0 else 0.9 * self.step_s + 0.1 * per_step

    def replanned(self, steps_now: int) -> None:
        if self._mark is None:  # a re-plan before the last one delivered counts from the first
            self._mark = steps_now

    def delivered(self, steps_now: int) -> None:
        if self._mark is not None:
            self._delivered.append(steps_now - self._mark)
            self._mark = None
