"""`improv calibrate`'s measurement: the round trip of probe notes through a loopback.

improv's output wired back to its input (a cable, or a JACK/ALSA connection): one probe note at a
time, sent as the live path sends a planned note and stamped on arrival as the live input stamps,
the next one after a random gap so the probes fall at every phase of the MIDI system's period. On
improv's JACK client that is sample-accurate (a probe handed over ahead, due at a frame, and read
at its frame), so a loopback inside JACK measures 0 and a cable the interface's own latency;
elsewhere a probe is due when it is sent.
Following a DAW's clock, two hops lie between its grid and improv's answers arriving there: the
clock's way in and the notes' way out. A cable (or any outside loopback, `--in`/`--out`) makes the
probes take both, so the median round trip is the value for `time.latency_ms`; `--loopback` wires
improv's output to its own input inside the MIDI system, one hop, so the value is twice its median. Each probe is ended at once (a note-off), so
nothing is left sounding whatever happens.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from improv.errors import ImprovError
from improv.midi_in import MidiInput

PROBE_PITCH = 60
WAIT_S = 0.25  # a probe not back by then is lost
GAP_S = (0.004, 0.012)  # between a probe's arrival and the next send (random: every phase)
SAMPLE_ACCURATE_MS = 0.05  # a round trip this short: the probes landed on their frames (a frame: 0.02 ms)
GIVE_UP_AFTER = 5  # the first probes all lost: nothing is connected
NOTHING_HEARD = ("nothing came back from improv's output: connect it to improv's input (a MIDI "
                 "cable from out to in, or a JACK/ALSA connection; `--backend jack --loopback` "
                 "wires one itself) and run `improv calibrate` again")


@dataclass(frozen=True)
class Calibration:
    round_trips_ms: tuple[float, ...]  # one per probe heard
    sent: int
    hops: int = 2  # MIDI-system hops a round trip takes: 2 through a cable, 1 for `--loopback`

    @property
    def lost(self) -> int:
        return self.sent - len(self.round_trips_ms)

    def q(self, quantile: float) -> float:
        return float(np.percentile(self.round_trips_ms, quantile * 100))

    @property
    def median_ms(self) -> float:
        return self.q(0.5)

    @property
    def p99_ms(self) -> float:
        return self.q(0.99)

    @property
    def spread_ms(self) -> float:
        """p1 to p99: how much the round trip varies (what no setting can take away)."""
        return self.q(0.99) - self.q(0.01)

    @property
    def latency_ms(self) -> float:
        """What to set time.latency_ms to: the median of two hops (the clock in, the notes out), to
        a tenth of a millisecond."""
        return round(self.median_ms * 2 / self.hops, 1) + 0.0  # never -0

    def report(self) -> str:
        lines = [f"{len(self.round_trips_ms)} of {self.sent} probes came back: round trip median "
                 f"{_ms(self.median_ms)} ms, p99 {_ms(self.p99_ms)} ms, spread (p1..p99) {_ms(self.spread_ms)} ms",
                 *(["the loopback is one hop inside the MIDI system; a DAW's clock in and improv's notes "
                    "out are two, so the setting is twice the median"] if self.hops == 1 else []),
                 *(["no delay: improv's ports are sample-accurate here (JACK), so inside the MIDI system "
                    "nothing needs compensating; a cable through your interface measures its latency"]
                   if abs(self.median_ms) < SAMPLE_ACCURATE_MS else []),
                 f"set time.latency_ms = {self.latency_ms:g} (or run with --latency-ms {self.latency_ms:g}) "
                 "and improv's planned notes land that much earlier, on the grid"]
        if self.spread_ms > max(1.0, self.median_ms):
            lines.append("the round trip varies more than it lasts: a smaller buffer (JACK period) or a "
                         "less loaded machine helps more than the setting")
        return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{round(value, 2) + 0.0:.2f}"  # never "-0.00"


def measure(midi_out: Any, midi_in: Any, *, probes: int = 300, seed: int = 0,
            present: Any = None) -> Calibration:
    """Send `probes` probe notes on `midi_out` (rtmidi MidiOut, opened) and time their return on
    `midi_in` (rtmidi MidiIn or improv's JACK client, opened), stamped as the live input stamps
    (`improv.midi_in.MidiInput`). `present()`: whether both ports are still there (checked
    after a lost probe). Raises ImprovError when nothing comes back or a port goes away."""
    source = MidiInput(midi_in)
    rng = random.Random(seed)
    trips: list[float] = []
    try:
        for i in range(probes):
            velocity = 1 + i % 127  # the probe's number: a stray late one is never taken for it
            sent_s = _send(midi_out, [0x90, PROBE_PITCH, velocity])
            arrived_s = _arrival(source, velocity, sent_s + WAIT_S)
            if arrived_s is not None:
                trips.append((arrived_s - sent_s) * 1000)
            elif present is not None and not present():
                raise ImprovError("a MIDI port of the loopback went away while calibrating: connect "
                                  "improv's output to its input again and rerun `improv calibrate`")
            _send(midi_out, [0x80, PROBE_PITCH, 0])
            if not trips and i + 1 >= GIVE_UP_AFTER:
                raise ImprovError(NOTHING_HEARD)
            time.sleep(rng.uniform(*GAP_S))
    finally:
        source.close()
    if len(trips) < probes // 2:
        raise ImprovError(f"only {len(trips)} of {probes} probes came back: the loopback loses notes; "
                          "check the connection from improv's output to its input and rerun")
    return Calibration(tuple(trips), probes)


def _arrival(source: MidiInput, velocity: int, deadline_s: float) -> float | None:
    """The stamp of the probe note-on with this velocity, or None when the deadline passes."""
    while (left_s := deadline_s - time.perf_counter()) > 0:
        item = source.get(left_s)
        if item is not None:
            t_s, data = item
            if len(data) == 3 and data[0] & 0xF0 == 0x90 and (data[1], data[2]) == (PROBE_PITCH, velocity):
                return t_s
    return None


def _send(midi_out: Any, data: list[int]) -> float:
    """Send a probe as the scheduler sends a plan; returns when it is due."""
    t_s = time.perf_counter()
    send_at, lead_s = getattr(midi_out, "send_at", None), getattr(midi_out, "lead_s", None)
    try:
        if send_at is not None and lead_s is not None:
            t_s += lead_s()
            send_at(data, t_s)
        else:
            midi_out.send_message(data)
    except Exception as err:  # noqa: BLE001 - rtmidi raises its own types
        raise ImprovError(f"improv's MIDI output failed while calibrating ({err}): connect it to "
                          "improv's input again and rerun `improv calibrate`") from err
    return t_s


CAL_IN, CAL_OUT = "improv calibrate in", "improv calibrate out"
NO_LOOPBACK = ("calibrating needs a loopback: wire improv's output to its input (a MIDI cable, "
               "then --in and --out naming the ports it joins; or `--backend jack --loopback`)")


def calibrate(*, in_spec: str | None, out_spec: str | None, backend: str | None, loopback: bool,
              probes: int) -> Calibration:
    """Open the loopback (ours, wired to itself with `loopback`; else the ports named) and measure."""
    from improv.errors import ConfigError
    from improv.ports import choose_backend, open_port

    if loopback and (in_spec or out_spec):
        raise ConfigError("--loopback wires improv's output to its own input: leave out --in and --out")
    if not loopback and not (in_spec and out_spec):
        raise ImprovError(NO_LOOPBACK)
    if probes < 20:
        raise ConfigError(f"--probes {probes}: use at least 20 (a few hundred give a steady p99)")
    name = choose_backend(backend)
    midi_in = open_port("in", in_spec, name, CAL_IN)
    try:
        midi_out = open_port("out", _own_input(midi_in) if loopback else out_spec, name, CAL_OUT)
        try:
            result = measure(midi_out.rt, midi_in.rt, probes=probes,
                             present=lambda: midi_in.present() and midi_out.present())
            return dataclasses.replace(result, hops=1 if loopback else 2)
        finally:
            midi_out.close()
    finally:
        midi_in.close()


def _own_input(midi_in: Any) -> str:
    """The full name our virtual input is listed under, for our output to connect to it."""
    from improv.ports import probe

    hits = [n for n in probe(midi_in.backend).outputs if CAL_IN in n]
    if len(hits) != 1:
        raise ImprovError(f"--loopback: cannot find improv's own input among the outputs' destinations "
                          f"({hits or 'none'}); connect the ports by hand and pass --in and --out")
    return hits[0]
