"""Mode "duet": improv plays along from the player's first note (driven by `improv.improviser`).

A generator plans `duet_horizon_beats` ahead of now from a fork of the dialogue; its notes go into
a `Part` (beats) and reach the scheduler just before they are due. Each player note re-plans from
``now + guard_s``: notes not yet started are dropped, notes already started keep their planned end
(the part keeps their note-offs, the scheduler the ones it has), and the next generator - its
context has the player's note - takes over from the cutoff, ending the inherited notes that have
no end yet and not re-striking those still to end.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from improv.clock import BeatTimeline
from improv.phrase import Dialogue, PhraseGenerator
from improv.plans import Part, Planned

# fork(start_beats, sounding {pitch: onset beats}, ending {pitch: end beats}) -> a generator
Fork = Callable[[float, dict[int, float], dict[int, float]], PhraseGenerator]


class Duet:
    def __init__(self, clock: BeatTimeline, dialogue: Dialogue, channel: int, guard_s: float) -> None:
        self.clock = clock
        self.dialogue = dialogue
        self.guard_s = guard_s
        self.part = Part("duet", channel)
        self.gen: PhraseGenerator | None = None
        self.resume_beats = -math.inf  # a re-plan starts here (its cutoff)

    def begin(self, now_s: float, fork: Fork) -> PhraseGenerator:
        """A generator from now (or the last cutoff), inheriting the notes that still sound."""
        start = max(self.clock.beats_at(now_s), self.resume_beats)
        voices = self.part.voices
        sounding = {v.pitch: v.on_beats for v in voices if v.off_beats is None}
        ending = {v.pitch: v.off_beats for v in voices if v.off_beats is not None and v.off_beats > start}
        self.gen = fork(start, sounding, ending)
        return self.gen

    def behind(self, until_beats: float) -> bool:
        """Whether the generator has model work to do before `until_beats`."""
        return self.gen is not None and not self.gen.done and self.gen.frontier_beats < until_beats - 1e-9

    def replan(self, now_s: float) -> list[Planned]:
        """A player note: what starts before the cutoff stays (with its planned end), everything
        later is dropped, to be planned again from a context that has the player's note."""
        if self.gen is None:
            return []
        cutoff_s = now_s + self.guard_s
        cutoff_beats, self.gen = self.clock.beats_at(cutoff_s), None
        self.resume_beats = cutoff_beats
        plans, ends = self.part.cut(self.clock, cutoff_s)
        self.dialogue.replanned(cutoff_beats, ends)
        return [*plans, Planned(cutoff_s, "cancel", source="duet")]

    def stop(self, now_s: float) -> list[Planned]:
        """Note-offs for what sounds; nothing waits any more (cancel "duet" in the scheduler too)."""
        plans = self.part.stop(now_s)
        self.part = Part("duet", self.part.channel)
        self.gen = None
        return plans

    def wakeups(self, horizon_beats: float) -> list[float | None]:
        """When the duet needs a tick: to hand notes over, and to plan on (half a horizon ahead)."""
        times = [self.part.next_release_s(self.clock)]
        if self.gen is not None and not self.gen.done:
            times.append(self.clock.time_at(self.gen.frontier_beats - horizon_beats / 2))
        return times
