"""Which JACK recorder tells the truth under load: rtmidi callbacks vs the C recorder.

    .venv/bin/python -m benchmarks.profiles.jack_recorders [--chords 400] [--burners 2] [--realtime]

4-note chords every 30 ms on a private jackd while `--burners` processes load the cores; an rtmidi
callback in this process, the same in a child process, and benchmarks/harness/jack_recorder.c listen
to the same port. Prints what each missed and what it received that was never sent.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chords", type=int, default=400)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--realtime", action="store_true", help="jackd --realtime (where allowed)")
    args = parser.parse_args(argv)

    import rtmidi

    from benchmarks.harness import jackd
    from benchmarks.harness.clients import RTMIDI_RECORDER, Recorder

    burners: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="improv-recorders-") as tmp, \
            jackd.running("improv-recorders", Path(tmp) / "jackd.log", realtime=args.realtime) as server:
        try:
            out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "src")
            out.open_virtual_port("out")
            here: list[tuple[int, int]] = []
            cb_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "in-process")
            cb_in.open_virtual_port("in")
            cb_in.set_callback(lambda md, _d=None: here.append(tuple(md[0][:2])))
            c_rec = Recorder("c-recorder")
            child = Recorder("rtmidi-child", command=RTMIDI_RECORDER)
            for dst in ("in-process:in", "c-recorder:in", "rtmidi-child:in"):
                server.connect("src:out", dst)
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
        finally:
            for b in burners:
                b.kill()
    want = collections.Counter(sent)
    print(f"{len(sent)} messages sent ({args.chords} chords of 4, on and off), {args.burners} burners, "
          f"jackd {'--realtime' if args.realtime else '--no-realtime'}")
    for label, got in (("rtmidi callback, this process", here),
                       ("rtmidi callback, own process", [tuple(m[:2]) for _, m in child.received]),
                       ("C recorder", [tuple(m[:2]) for _, m in c_rec.received])):
        have = collections.Counter(got)
        print(f"  {label:32s} received {len(got):5d}, missed {sum((want - have).values()):4d}, "
              f"never sent {sum((have - want).values()):4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
