"""Builds improv's native JACK MIDI client (improv/native/jack_midi.c, loaded with ctypes by
improv/jack_midi.py) and the session memory's prediction and blend (improv/native/memory_mix.c,
imported by improv/memory.py and improv/blend.py). Both optional: without a C compiler or
libjack.so.0 the build goes on and improv uses python-rtmidi for JACK too, and the memory its
Python. Everything else is in pyproject.toml."""

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
try:
    import numpy
except ImportError:  # (a build without numpy: the memory's Python path)
    numpy = None
if numpy is not None:
    ext_modules.append(Extension(
        "improv._memory_mix",
        sources=["improv/native/memory_mix.c"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["/O2"] if sys.platform == "win32" else ["-O2", "-ffp-contract=off"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
