"""Which JACK recorder tells the truth under load: rtmidi callbacks vs tests/jack_recorder.c.

    .venv/bin/python -m benchmarks.jack_recorders [--chords 400] [--burners 2] [--realtime]

A private jackd (dummy driver, 48 kHz, 64 frames); one rtmidi output sends 4-note chords (note-ons,
then note-offs, back to back, as improv's scheduler sends a chord) every 30 ms, while `--burners`
processes load the 2 cores (3 ms busy, 2 ms asleep). Three recorders listen to the same port:
an rtmidi callback in this process (the tests' old recorder), the same in a child process that does
nothing else (the stand-in without a C compiler), and the C recorder. Each prints how many of the
sent messages it missed and how many it received that were never sent (a chord's later notes
read after JACK rewrote the buffer arrive as copies of another note).
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
import uuid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chords", type=int, default=400)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--realtime", action="store_true", help="jackd --realtime (where allowed)")
    args = parser.parse_args(argv)

    name = f"improv-recorders-{uuid.uuid4().hex[:6]}"
    os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    jack = subprocess.Popen(["jackd", "-n", name, "--realtime" if args.realtime else "--no-realtime",
                             "-d", "dummy", "-r", "48000", "-p", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    burners: list[subprocess.Popen] = []
    try:
        time.sleep(1.5)
        import rtmidi

        from tests import jack_clients
        from tests.jack_clients import Recorder

        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "src")
        out.open_virtual_port("out")
        here: list[tuple[int, int]] = []
        cb_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "in-process")
        cb_in.open_virtual_port("in")
        cb_in.set_callback(lambda md, _d=None: here.append(tuple(md[0][:2])))
        c_rec = Recorder("c-recorder")
        jack_clients.recorder_command.cache_clear()
        real = jack_clients.recorder_command
        jack_clients.recorder_command = lambda: (sys.executable, "-u", jack_clients.__file__, "record")
        child = Recorder("rtmidi-child")
        jack_clients.recorder_command = real
        for dst in ("in-process:in", "c-recorder:in", "rtmidi-child:in"):
            subprocess.run(["jack_connect", "src:out", dst], check=True)
        burn = "import time\nwhile True:\n  t = time.perf_counter()\n  while time.perf_counter() - t < 0.003: pass\n  time.sleep(0.002)"
        burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(args.burners)]
        time.sleep(0.3)
        sent: list[tuple[int, int]] = []
        t0 = time.perf_counter()
        for i in range(args.chords):
            chord = (48 + i * 7 % 30, 50 + i * 5 % 30, 52 + i * 3 % 30, 55 + i * 11 % 30)
            time.sleep(max(0.0, t0 + i * 0.03 - time.perf_counter()))
            for status in (0x90, 0x80):
                for pitch in chord:
                    out.send_message([status, pitch, 80 if status == 0x90 else 0])
                    sent.append((status, pitch))
        time.sleep(0.5)
        for b in burners:
            b.kill()
        c_rec.close()
        child.close()
        cb_in.cancel_callback()
        want = collections.Counter(sent)
        print(f"{len(sent)} messages sent ({args.chords} chords of 4, on and off), {args.burners} burners, "
              f"jackd {'--realtime' if args.realtime else '--no-realtime'}")
        for label, got in (("rtmidi callback, this process", here),
                           ("rtmidi callback, own process", [tuple(m[:2]) for _, m in child.received]),
                           ("tests/jack_recorder.c", [tuple(m[:2]) for _, m in c_rec.received])):
            have = collections.Counter(got)
            print(f"  {label:32s} received {len(got):5d}, missed {sum((want - have).values()):4d}, "
                  f"never sent {sum((have - want).values()):4d}")
        return 0
    finally:
        for b in burners:
            b.kill()
        jack.terminate()
        jack.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
