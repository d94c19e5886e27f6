"""Raw MIDI bytes -> typed events. The one place that knows the wire format.

`MidiParser` is a byte-stream parser with the quirks real devices have: running status, note-on
with velocity 0 meaning note-off, real-time bytes (clock, start, stop, ...) interleaved anywhere,
even inside another message or a SysEx dump, SysEx of any length (skipped without buffering, so
a flood costs nothing), and stray data bytes (ignored). It never raises: a bad byte is dropped.
`feed` reads a byte stream in any chunking; `feed_message` reads framed messages (the live input),
where nothing carries from one message into the next.

Times are seconds on the daemon's monotonic clock (`improv.clock`), stamped when the bytes
arrived (`improv.midi_in`); channels are 0-based (0..15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "NoteOn", "NoteOff", "Control", "ProgramChange", "ClockTick", "Start", "Stop", "Continue", "SongPosition",
    "Event", "MidiParser", "parse_message",
]


@dataclass(frozen=True, slots=True)
class NoteOn:
    t_s: float
    channel: int
    pitch: int
    velocity: int  # 1..127; velocity 0 arrives as NoteOff


@dataclass(frozen=True, slots=True)
class NoteOff:
    t_s: float
    channel: int
    pitch: int


@dataclass(frozen=True, slots=True)
class Control:
    t_s: float
    channel: int
    control: int
    value: int


@dataclass(frozen=True, slots=True)
class ProgramChange:
    """Program Change (0xC0): `program` 0..127 as on the wire (most gear shows it as 1..128)."""

    t_s: float
    channel: int
    program: int


@dataclass(frozen=True, slots=True)
class ClockTick:
    """MIDI clock (0xF8), 24 per quarter note."""

    t_s: float


@dataclass(frozen=True, slots=True)
class Start:
    t_s: float


@dataclass(frozen=True, slots=True)
class Stop:
    t_s: float


@dataclass(frozen=True, slots=True)
class Continue:
    t_s: float


@dataclass(frozen=True, slots=True)
class SongPosition:
    """Song Position Pointer (0xF2): where the next Continue resumes, in 16th notes."""

    t_s: float
    sixteenths: int


Event = NoteOn | NoteOff | Control | ProgramChange | ClockTick | Start | Stop | Continue | SongPosition

_REALTIME = {0xF8: ClockTick, 0xFA: Start, 0xFB: Continue, 0xFC: Stop}
# data bytes that follow each status: channel messages by high nibble, system common by byte
_CHANNEL_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_COMMON_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}
_SYSEX, _EOX = 0xF0, 0xF7


def _message(t_s: float, status: int, data: Sequence[int]) -> Event | None:
    """One complete message (status + exactly its data bytes) -> Event, or None if not wanted."""
    kind, channel = status & 0xF0, status & 0x0F
    if kind == 0x90:
        if data[1] == 0:
            return NoteOff(t_s, channel, data[0])
        return NoteOn(t_s, channel, data[0], data[1])
    if kind == 0x80:
        return NoteOff(t_s, channel, data[0])
    if kind == 0xB0:
        return Control(t_s, channel, data[0], data[1])
    if kind == 0xC0:
        return ProgramChange(t_s, channel, data[0])
    if status == 0xF2:
        return SongPosition(t_s, data[0] | (data[1] << 7))
    return None  # aftertouch, pitch bend, MTC, song select, tune request


class MidiParser:
    """Stateful byte-stream parser: `feed` bytes as they come, get the completed events back."""

    def __init__(self) -> None:
        self._status = 0  # running status (a channel status byte), 0 = none
        self._need = 0  # data bytes the current message needs
        self._data: list[int] = []
        self._in_sysex = False

    def reset(self) -> None:
        self.__init__()

    def feed(self, t_s: float, data: bytes | Sequence[int]) -> list[Event]:
        """Parse `data` (any chunking: one message, several, or a fragment); never raises."""
        events: list[Event] = []
        try:
            for byte in data:
                event = self._byte(t_s, byte)
                if event is not None:
                    events.append(event)
        except TypeError:  # not iterable at all; nothing to parse
            pass
        return events

    def feed_message(self, t_s: float, data: bytes | Sequence[int]) -> list[Event]:
        """Parse one framed message, as rtmidi hands each callback (ALSA, JACK and CoreMIDI all
        deliver whole messages that start with a status byte); never raises.

        What the message leaves unfinished is dropped, running status included, so a truncated
        or status-less fragment from a broken sender can never join the next message into a note
        nobody played. Real-time bytes inside it still count.
        """
        events = self.feed(t_s, data)
        self.reset()
        return events

    def _byte(self, t_s: float, byte: object) -> Event | None:
        if not isinstance(byte, int) or not 0 <= byte <= 0xFF:
            return None  # garbage from a caller: drop it, keep the state
        if byte >= 0xF8:  # real-time: may appear anywhere, changes nothing else
            cls = _REALTIME.get(byte)
            return cls(t_s) if cls is not None else None
        if byte >= 0x80:
            return self._status_byte(t_s, byte)
        return self._data_byte(t_s, byte)

    def _status_byte(self, t_s: float, byte: int) -> Event | None:
        self._in_sysex = byte == _SYSEX
        self._data.clear()
        if byte < 0xF0:
            self._status, self._need = byte, _CHANNEL_LEN[byte & 0xF0]
            return None
        self._status = 0  # system common cancels running status (MIDI 1.0 spec)
        self._need = _COMMON_LEN.get(byte, 0)
        if byte in _COMMON_LEN:
            if self._need == 0:
                return _message(t_s, byte, ())
            self._status = byte  # collect its data; not reused as running status (see below)
        return None  # SysEx start, EOX, undefined F4/F5

    def _data_byte(self, t_s: float, byte: int) -> Event | None:
        if self._in_sysex or self._status == 0:
            return None  # SysEx payload (not buffered) or data with no status: ignore
        self._data.append(byte)
        if len(self._data) < self._need:
            return None
        status, data = self._status, tuple(self._data)
        self._data.clear()
        if status >= 0xF0:
            self._status = 0  # system common has no running status
        return _message(t_s, status, data)


def parse_message(t_s: float, data: bytes | Sequence[int]) -> Event | None:
    """One complete message (e.g. what rtmidi hands a callback) -> its Event, or None.

    Real-time bytes inside it are ignored; if it holds several messages, the first is returned.
    """
    for event in MidiParser().feed(t_s, data):
        if not isinstance(event, (ClockTick, Start, Stop, Continue)) or len(data) == 1:
            return event
    return None
