"""The daemon's threads around the engine (no thread per message):

  * MIDI callback (rtmidi's): stamps and enqueues (`improv.midi_in`), nothing else;
  * engine (`Daemon._engine_loop`): waits on the input queue until the engine's next wakeup,
    parses, feeds the `Engine`, ticks it; a model error is logged in one line, every note is
    released (the engine panics) and the improviser starts listening again;
  * scheduler (`improv.scheduler`, started by `Engine.start`): the only one touching the output;
  * main (`improv.serve`): signals, the view (~4 Hz from `snapshot`), the port watch.
Live input takes the engine's one input path (`Engine.feed_message`). A port change reported
from the main thread (`port_changed`) is acted on by the engine thread: a vanished input
releases the player's held keys, a vanished output makes the engine forget what sounded, a
returning output gets All Notes Off first.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any

from improv.errors import ModelError
from improv.midi_in import MidiInput

log = logging.getLogger("improv")

MAX_WAIT_S = 0.05  # the engine thread looks around at least this often
ERROR_BACKOFF_S = 0.25  # after a model error, the engine thread waits at least this long
ERROR_LOG_EVERY_S = 5.0  # a model failing over and over is logged once per this


class Daemon:
    """An Engine between an input queue and an output port, with the threads around it."""

    def __init__(self, engine: Any, midi_in: MidiInput, *, take: Any = None,
                 in_name: str = "", out_name: str = "", backend: str = "",
                 model_name: str = "") -> None:
        from improv.record import Taps

        self.engine = engine
        self.midi_in = midi_in
        self.take = take
        self.taps = Taps(take, engine.settings) if take is not None else None  # --record
        if self.taps is not None:
            engine.player_tap = self.taps.player
            engine.scheduler.on_record = self.taps.record
        self.names = (in_name, out_name, backend, model_name)
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()  # port changes, for the engine thread
        self._remotes: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()  # OSC controls, for the engine thread
        self._engine_stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff_until_s = 0.0
        self._logged_at_s = -math.inf
        self.model_errors = 0
        self.last_error = ""
        self.startup_s: float | None = None

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        self.engine.start()  # the scheduler thread
        self._thread = threading.Thread(target=self._engine_loop, name="improv-engine", daemon=True)
        self._thread.start()

    def _engine_loop(self) -> None:
        clock = self.engine.clock
        warm_s = self.engine.settings.time.keep_warm_ms / 1000
        while not self._engine_stop.is_set():
            now = clock.now()
            wake = self.engine.next_wakeup_s()
            wait = MAX_WAIT_S if wake is None else min(MAX_WAIT_S, max(0.0, wake - now))
            wait = max(wait, self._backoff_until_s - now)
            idle = 0 < warm_s < wait
            item = self.midi_in.get(warm_s if idle else wait)
            if item is None and idle:  # nothing due yet: keep the model's caches and the CPU warm
                self._guarded(self.engine.keep_warm)
                self._guarded(self.handle_port_changes)
                continue
            while item is not None:
                self._guarded(self.engine.feed_message, *item)
                item = self.midi_in.get_nowait()
            self._guarded(self.handle_port_changes)
            while (remote := _get(self._remotes)) is not None:
                self._guarded(self.engine.remote, *remote)
            self._guarded(self.engine.tick)

    def thread_ids(self) -> dict[str, int | None]:
        """The OS ids of the threads that keep time (--realtime, `improv.realtime`)."""
        return {"scheduler": self.engine.scheduler.native_id,
                "engine": None if self._thread is None else self._thread.native_id}

    def port_changed(self, change: str) -> None:
        """From any thread: "input lost" | "output lost" | "output back"; the engine thread acts."""
        self._requests.put(change)

    def remote(self, name: str, value: Any = None) -> None:
        """From any thread (the OSC server): a control for the engine thread, woken at once."""
        self._remotes.put((name, value))
        self.midi_in.put(time.perf_counter(), [])  # an empty message: parsed into nothing

    def handle_port_changes(self) -> None:
        """Act on what `port_changed` queued (engine thread)."""
        while not self._requests.empty():
            self._port_changed(self._requests.get_nowait())

    def _port_changed(self, change: str) -> None:
        now = self.engine.clock.now()
        if change == "input lost":
            self.engine.release_player_keys(now)
        elif change in ("output lost", "output back"):  # lost: forget what sounded; back: silence the synth
            self.engine.scheduler.add(self.engine.improviser.all_off(now))
            self.engine.scheduler.panic(now)

    def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except ModelError as err:  # the engine already released every note (Scheduler.panic)
            self._model_failed(str(err))
        except Exception as err:  # noqa: BLE001 - a bug must not leave notes on or stop listening
            self._model_failed(f"engine error ({type(err).__name__}: {err})")

    def _model_failed(self, message: str) -> None:
        self.model_errors += 1
        self.last_error = message
        if time.monotonic() - self._logged_at_s >= ERROR_LOG_EVERY_S:  # one line, not a flood
            self._logged_at_s = time.monotonic()
            log.error("%s; still listening", message)
        now = self.engine.clock.now()
        self._backoff_until_s = now + ERROR_BACKOFF_S
        try:  # forget the failed answer so the next tick does not retry it at once
            self.engine.scheduler.add(self.engine.improviser.all_off(now))
        except Exception:  # noqa: BLE001
            self.engine.scheduler.panic()

    def stop(self) -> None:
        """Stop the engine thread, release every note, stop the scheduler. Safe to call twice."""
        self._engine_stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("the engine thread did not stop within 2 s; releasing notes anyway")
            self._thread = None
        self.midi_in.close()
        self.engine.shutdown()

    # ------------------------------------------------------------------ the view

    def snapshot(self) -> Any:
        from improv.view import Snapshot, call_and_response

        stats = self.engine.stats()
        imp = self.engine.improviser
        call, response = call_and_response(list(imp.last_call), list(imp.last_response))
        settings = self.engine.settings
        in_name, out_name, backend, _ = self.names
        errors = self.model_errors + self.engine.out.send_errors
        return Snapshot(
            backend=backend, in_port=in_name, out_port=out_name, model=imp.model_name,
            bpm=stats.bpm, clock=settings.time.clock, clock_running=stats.clock_running,
            sending_clock=settings.time.send_clock, mode=stats.mode, state=stats.state,
            call=call, response=response, step_ms_p50=stats.step_ms_p50,
            step_ms_p99=stats.step_ms_p99, late_ms_p50=stats.late_ms_p50,
            late_ms_p99=stats.late_ms_p99, notes_in=stats.notes_in, notes_out=stats.notes_out,
            responses=stats.responses, errors=errors,
            last_error=self.last_error or ("MIDI output send failed"
                                           if self.engine.out.send_errors else ""),
            startup_s=self.startup_s, key=imp.listener.key_seen.name if imp.listener.key_seen else "",
            following=imp.following)

    def state(self) -> dict[str, Any]:
        """What OSC reports (`improv.osc`): mode, model, key, tempo, answers and the settings a
        control changes. Read from the main thread, like `snapshot`."""
        imp, stats = self.engine.improviser, self.engine.stats(recent=1)
        s = imp.settings
        follow = s.listen.follow
        return {"mode": stats.mode, "state": stats.state, "model": imp.model_name,
                "key": imp.listener.key_seen.name if imp.listener.key_seen else "",
                "tempo": round(float(stats.bpm), 3), "answers": stats.responses,
                "temperature": s.sampling.temperature, "length": s.mode.response_length,
                "follow": "auto" if follow is None else follow}

    def beat_origin_s(self) -> float:
        """Where beat 0 of the engine's beat clock lies (seconds, time.perf_counter)."""
        return float(self.engine.beat_clock.time_at(0.0))




def _get(q: queue.SimpleQueue) -> Any:
    try:
        return q.get_nowait()
    except queue.Empty:
        return None
