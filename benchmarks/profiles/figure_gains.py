"""How strongly answers take up the call's figures (improv.figures), gain by gain: the music
section's measures (benchmarks.music) on held-out calls, with the figures off and at each gain pair.

    python -m benchmarks.profiles.figure_gains [--models bach-lstm,bach-wavenet] [--corpora bach,essen,oneills]
        [--calls 8] [--seeds 3] [--gains 2.5:1,4:2,6:3]
"""

from __future__ import annotations

import argparse

import improv.figures as figures
from benchmarks.music import answer_measures, held_out_calls
from improv.model_step import StepModel

KEYS = ("in_key", "echo", "copy", "density_log2", "register_st", "distinct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bach-lstm,bach-wavenet")
    parser.add_argument("--corpora", default="bach,essen,oneills")
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--gains", default="2.5:1,4:2,6:3", help="GAIN_FIGURE:GAIN_STEP pairs")
    args = parser.parse_args()
    gains = [tuple(float(x) for x in pair.split(":")) for pair in args.gains.split(",")]
    print("model corpus setting " + " ".join(KEYS))
    for name in args.models.split(","):
        model = StepModel.load(name)
        for corpus in args.corpora.split(","):
            calls = held_out_calls(corpus, args.calls)
            runs = [("off", None)] + [(f"{g:g}/{s:g}", (g, s)) for g, s in gains]
            for label, pair in runs:
                if pair is not None:
                    figures.GAIN_FIGURE, figures.GAIN_STEP = pair
                got = answer_measures(model, calls, list(range(args.seeds)), overrides={"listen.figures": pair is not None})
                print(name, corpus, label, " ".join(f"{got[k]:.3f}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main()
