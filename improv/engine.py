"""The engine: model + improviser + scheduler + output, driven by one clock. Single-threaded.

The demo drives it on a `ManualClock` (`run_until`, no threads); the daemon (improv.daemon) runs
one engine thread around it: wait for input at most until `next_wakeup_s()`, `feed_message` what
came (the one input path: framed per message, kept sane by `Listener.admit`), then `tick()`.
`feed` hands its plans to the scheduler at once, the duet's reaction included, and a plan that is
already due is sent right there. `start()` runs the scheduler's own thread; `shutdown()` releases
everything. `stats()` may be called from any thread; nothing else is thread-safe.

With ``time.clock = "midi"`` clock events drive the `MidiClockFollower`; a Stop, or a clock that
went away without one, releases improv's notes. With ``send_clock`` the engine plans 24-ppqn clock
at absolute deadlines, with ``metronome`` a click on every beat, both `HORIZON_S` ahead. A model
failure releases every note (`Scheduler.panic`) and is raised as `ModelError`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from improv.clock import BeatClock, Clock, ClockSender, ManualClock, MidiClockFollower, next_grid_beats
from improv.errors import ConfigError, ImprovError, ModelError
from improv.events import ClockTick, Continue, MidiParser, NoteOn, SongPosition, Start, Stop
from improv.improviser import Improviser
from improv.memory import SessionMemory
from improv.midi_out import MidiOut, Port
from improv.reflex import Reflex, Reflexed
from improv.parts import LOOKAHEAD_S
from improv.scheduler import Planned, Scheduler
from improv.settings import Settings, TimeSettings

log = logging.getLogger(__name__)

HORIZON_S = LOOKAHEAD_S  # metronome and clock are planned this far ahead, like improv's notes
CLICK_S = 0.03  # metronome note length
WARM_TOKEN = 0  # what `keep_warm` steps: any id will do (BOS in the event vocabulary)
_TRANSPORT = (ClockTick, Start, Stop, Continue, SongPosition)


@dataclass(frozen=True)
class EngineStats:
    """Numbers for the view (improv.view.Snapshot)."""

    state: str
    mode: str
    bpm: float
    clock_running: bool
    step_ms_p50: float | None
    step_ms_p99: float | None
    late_ms_p50: float | None
    late_ms_p99: float | None
    notes_in: int
    notes_out: int
    responses: int
    dropped: int


class Metronome:
    """A click on every beat of the clock in charge; the bar's first beat accented."""

    def __init__(self, time: TimeSettings, beats_per_bar: int) -> None:
        self.time, self.beats_per_bar = time, beats_per_bar
        self.next_beat: float | None = None

    def plans_until(self, beat_clock, now_s: float, until_s: float) -> list[Planned]:
        beat = beat_clock.beats_at(now_s)
        if self.next_beat is None or not -1.0 <= self.next_beat - beat <= 2.0:  # start, or the song moved
            self.next_beat = next_grid_beats(beat, 1.0)
        plans = []
        while (due := beat_clock.time_at(self.next_beat)) <= until_s:
            accent = round(self.next_beat) % self.beats_per_bar == 0
            note = self.time.metronome_accent_note if accent else self.time.metronome_note
            ch = self.time.metronome_channel - 1
            plans += [Planned(due, "on", note, self.time.metronome_velocity, ch, "metronome"),
                      Planned(due + CLICK_S, "off", note, 0, ch, "metronome")]
            self.next_beat += 1.0
        return plans


class Engine:
    def __init__(self, model, settings: Settings, clock: Clock, out: Port, *,
                 rng: np.random.Generator | None = None, memory: SessionMemory | None = None,
                 more_models: Sequence = (), reflex: Reflex | None = None) -> None:
        self.settings = settings
        self.clock = clock
        now = clock.now()
        self.out = MidiOut(out, settings.output.channel - 1)
        t = settings.time
        self.scheduler = Scheduler(self.out, clock, lead_s=t.latency_ms / 1000)
        self.beat_clock = MidiClockFollower(t.bpm, t0_s=now) if t.clock == "midi" else BeatClock(t.bpm, now)
        self.improviser = Improviser(model, settings, self.beat_clock, rng=rng, memory=memory,
                                     more_models=more_models)
        self.improviser.duet.guard.lead_s += self.out.lead_s()  # what a sample-accurate port holds is out of reach
        self.reflex = self.improviser.duet.reaction.reflex = reflex  # the duet's reaction in the JACK cycle
        self.parser = MidiParser()
        self.metronome = Metronome(t, settings.mode.beats_per_bar) if t.metronome else None
        self.clock_sender = ClockSender(t.bpm, now) if t.send_clock else None
        self.notes_in = 0
        self.player_tap: Callable[[object], None] | None = None  # --record: each player event admitted
        self._answers_logged = 0
        self._refused: set[str] = set()  # bad remote values, logged once each
        self._threaded = False
        self._scratch: tuple[Any, Any] | None = None  # (model, its scratch state) for keep_warm
        self._closed = False
        self._sim_inbox: list = []  # run_until's events not yet delivered
        if self.clock_sender is not None:
            self.scheduler.add([Planned(now, "start", source="clock")])

    # ------------------------------------------------------------------ driving

    def start(self) -> None:
        """Run the scheduler on its own thread (the daemon); without it, `tick` sends what is due."""
        self._threaded = True
        self.scheduler.start()
        self.improviser.switch.start()  # a model switch is primed on a worker thread

    def feed_message(self, t_s: float, data: bytes | Iterable[int]) -> None:
        """One MIDI message as stamped by the input callback (a broken one never joins the next)."""
        for event in self.parser.feed_message(t_s, data):
            self.feed(event)

    def feed(self, event) -> None:
        """One parsed event (improv.events), kept sane first (`Listener.admit`). Its plans reach
        the scheduler before this returns, none waiting for a model step: the thru echo, the duet's
        reaction (due at the event's time) from the table the last tick prepared, a re-plan's cut,
        and the reaction computed at the note if there was no table; the session memory learns the
        event after them. What the reflex played for a note-on (`improv.reflex`) is taken as sent,
        and released if nothing adopts it."""
        for ev in self.improviser.listener.admit(event):
            if self.player_tap is not None:
                self.player_tap(ev)
            if isinstance(ev, _TRANSPORT):
                self._transport(ev)
                continue
            if isinstance(ev, NoteOn):
                self.notes_in += 1  # every note-on that arrived; the improviser applies the channel filter
            self._add(self._guard(self.improviser.echo, ev))
            reflexed = self._reflexed(ev)
            reaction = self._guard(self.improviser.react, ev, True, reflexed)
            if reflexed is None:
                self._add(reaction)
            elif not reaction:  # played by the reflex, adopted by nothing: released
                self._add([reflexed.release(ev.t_s)])
            self._add(self._guard(self.improviser.on_event, ev))
            if not reaction:  # no table to answer it from: chosen now, after the re-plan's cut
                self._add(self._guard(self.improviser.react, ev))
            self._guard(self.improviser.learn)  # after the reaction has gone out

    def remote(self, name: str, value: object = None) -> None:
        """A control from outside MIDI (OSC, `improv.osc`), applied as its CC would be; "panic"
        also sends All Notes Off. A bad value is logged once and ignored."""
        now = self.clock.now()
        try:
            self._add(self._guard(self.improviser.remote, name, value, now))
        except ConfigError as err:
            if str(err) not in self._refused:
                self._refused.add(str(err))
                log.warning("OSC %s: %s; ignored", name, err)
            return
        if name == "panic":
            self.scheduler.panic(now)

    def release_player_keys(self, now_s: float) -> None:
        """The input port went away: the keys it held will never be released, so release them."""
        self.parser.reset()
        for off in self.improviser.listener.keys_down(now_s):
            self.feed(off)

    def tick(self, now_s: float | None = None) -> None:
        now = self.clock.now() if now_s is None else now_s
        if self.reflex is not None:
            self.reflex.release_stale(self.scheduler, now)
        self._check_clock(now)
        steps, t0 = self.improviser.model.steps, self.clock.now()
        plans = self._guard(self.improviser.on_tick, now)
        self.improviser.measured_tick(self.clock.now() - t0, self.improviser.model.steps - steps)
        plans += self._periodic(now)
        self._add(plans)
        self._guard(self.improviser.learn)
        self._answers_logged = log_answers(self.improviser, self._answers_logged)
        if not self._threaded:
            self.scheduler.run_pending(now)

    def beat_origin_s(self) -> float | None:
        """A bar line of the grid answers start on now (seconds on the engine clock); None while
        the grid follows the player and no call has set it yet."""
        return self.improviser.grid_origin_s

    def keep_warm(self) -> None:
        """One step of the playing model on a scratch state of its own (time.keep_warm_ms): nothing
        the session hears, counts or times."""
        model = self.improviser.model.model
        if self._scratch is None or self._scratch[0] is not model:
            self._scratch = (model, model.new_state())
        model.step(WARM_TOKEN, self._scratch[1])

    def next_wakeup_s(self) -> float | None:
        """When `tick` should run next (seconds on the engine clock), None: only on input."""
        times = [self.improviser.next_wakeup_s()]
        if self.metronome is not None and self.metronome.next_beat is not None:
            times.append(self.beat_clock.time_at(self.metronome.next_beat) - HORIZON_S)
        elif self.metronome is not None:
            times.append(self.clock.now())
        if self.clock_sender is not None:
            times.append(self.clock_sender.deadline(self.clock_sender.next_n) - HORIZON_S)
        if isinstance(self.beat_clock, MidiClockFollower):
            times.append(self.beat_clock.lost_deadline_s())
        if not self._threaded:
            times.append(self.scheduler.next_due_s())
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def run_until(self, t_end_s: float, events: Iterable = ()) -> None:
        """Simulate up to `t_end_s` on a `ManualClock`: deliver `events` (now or in a later call)
        at their t_s, tick at every wakeup, send at every due time. Instant; for the demo and tests."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("run_until needs a ManualClock")
        self._sim_inbox = sorted([*self._sim_inbox, *events], key=lambda e: e.t_s)
        same_time = 0
        while True:
            wake = self.next_wakeup_s()
            nxt = min(self._sim_inbox[0].t_s if self._sim_inbox else math.inf,
                      math.inf if wake is None else wake)
            if nxt > t_end_s:
                if t_end_s > self.clock.now():
                    self.clock.set(t_end_s)
                    self.tick(t_end_s)
                return
            same_time = same_time + 1 if nxt <= self.clock.now() else 0
            if same_time > 100_000:
                raise RuntimeError(f"the engine makes no progress at t = {self.clock.now()} s")
            self.clock.set(max(nxt, self.clock.now()))
            while self._sim_inbox and self._sim_inbox[0].t_s <= self.clock.now():
                self.feed(self._sim_inbox.pop(0))
            self.tick(self.clock.now())

    def shutdown(self) -> None:
        """Release everything: improv's notes, thru notes, All Notes Off; Stop if sending clock."""
        if self._closed:
            return
        self._closed = True
        self.improviser.switch.stop()
        now = self.clock.now()
        if self.reflex is not None:  # what it played and nobody took: the panic below releases it
            self.reflex.close(self.scheduler)
        try:
            self.scheduler.add(self.improviser.all_off(now))
        finally:
            self.scheduler.stop()
            if self.clock_sender is not None:
                self.out.realtime("stop")
            self.scheduler.panic(now)

    # ------------------------------------------------------------------ views

    def stats(self, recent: int = 2000) -> EngineStats:
        """Safe to call from another thread (the view): it reads copies of bounded deques."""
        steps = list(self.improviser.model.times_ms.copy())[-recent:]
        records = list(itertools.islice(reversed(self.scheduler.records.copy()), recent))
        lateness = [(r.actual_s - r.planned_s) * 1000 for r in records if r.message.type == "note_on"]
        return EngineStats(self.improviser.state, self.improviser.mode, self.beat_clock.bpm,
                           self.beat_clock.running, _q(steps, 0.5), _q(steps, 0.99),
                           _q(lateness, 0.5), _q(lateness, 0.99), self.notes_in,
                           self.scheduler.notes_sent, self.improviser.responses, self.scheduler.dropped)

    # ------------------------------------------------------------------ internals

    def _transport(self, ev) -> None:
        follower = self.beat_clock if isinstance(self.beat_clock, MidiClockFollower) else None
        if follower is None:
            return  # internal clock: incoming transport is not ours to follow
        if isinstance(ev, ClockTick):
            self._check_clock(ev.t_s)  # a tick after a long gap: first the loss, then the resume
            follower.on_tick(ev.t_s)
        elif isinstance(ev, Start):
            follower.on_start(ev.t_s)
        elif isinstance(ev, Continue):
            follower.on_continue(ev.t_s)
        elif isinstance(ev, SongPosition):
            follower.on_song_position(ev.sixteenths, ev.t_s)
        elif isinstance(ev, Stop):
            follower.on_stop(ev.t_s)
            self._add(self.improviser.all_off(ev.t_s, thru=False))

    def _check_clock(self, now: float) -> None:
        follower = self.beat_clock
        if isinstance(follower, MidiClockFollower) and follower.check(now):
            log.warning("MIDI clock lost (no tick for %.2f s): improv's notes released; following "
                        "again when it comes back", follower.lost_after_s)
            self._add(self.improviser.all_off(now, thru=False))

    def _reflexed(self, ev) -> Reflexed | None:
        """What the reflex played for note-on `ev`, taken as sent (None: nothing, or no reflex)."""
        if self.reflex is None or not isinstance(ev, NoteOn):
            return None
        return self.reflex.take(ev.t_s, ev.pitch, self.scheduler)

    def _periodic(self, now: float) -> list[Planned]:
        plans: list[Planned] = []
        until = now + HORIZON_S + 1e-9  # (the wakeup was computed as deadline - HORIZON_S)
        if self.metronome is not None:
            plans += self.metronome.plans_until(self.beat_clock, now, until)
        if self.clock_sender is not None:
            plans += [Planned(d, "clock", source="clock") for d in self.clock_sender.take_until(until)]
        return plans

    def _add(self, plans: list[Planned]) -> None:
        if plans:
            self.scheduler.add(plans)

    def _guard(self, fn, *args) -> list[Planned]:
        try:
            return fn(*args)
        except ConfigError:
            raise  # a bad value from outside (`remote`): nothing happened, nothing to release
        except ImprovError:
            self.scheduler.panic()
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            self.scheduler.panic()
            raise ModelError(f"the model failed while playing ({type(err).__name__}: {err}); "
                             "all notes were released, check the model with `improv eval`") from err


def log_answers(imp: Improviser, logged: int) -> int:
    """Log the answers begun since the first `logged` (one line each); returns how many now."""
    new = list(imp.answers)[-min(imp.responses - logged, len(imp.answers)):] if imp.responses != logged else []
    for i, a in enumerate(new, start=imp.responses - len(new) + 1):
        origin = "none" if a.grid_origin_s is None else f"{a.grid_origin_s:.6f} s"
        log.info("answer %d: grid origin %s, phrase end %.6f s, starts %.6f s (beat %g), model %s",
                 i, origin, a.phrase_end_s, a.start_s, a.start_beats, a.model)
    return imp.responses


def _q(values: list[float], q: float) -> float | None:
    """The whole percentile at or below `q` (at most the 99th), interpolated (numpy's default,
    = statistics.quantiles(method="inclusive"), without importing statistics/decimal/fractions)."""
    if not values:
        return None
    return float(np.percentile(values, min(99, int(q * 100))))
