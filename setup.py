"""Builds improv's native JACK MIDI client (improv/native/jack_midi.c, loaded with ctypes by
improv/jack_midi.py). Optional: without a C compiler or libjack.so.0 the build goes on and improv
uses python-rtmidi for JACK too. Everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension(
        "improv._jack_midi",
        sources=["improv/native/jack_midi.c"],
        depends=["improv/native/jack_api.h", "improv/native/jack_frames.h", "improv/native/jack_reflex.h"],
        extra_compile_args=["-O2", "-std=gnu11"],
        extra_link_args=["-l:libjack.so.0"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
