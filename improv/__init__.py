"""improv: a real-time MIDI improvisation daemon. The runtime never imports torch."""

__version__ = "0.1.0"
