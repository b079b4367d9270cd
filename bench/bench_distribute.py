"""A short run on one device against the same run mirrored on two, and another seed.

Usage:
    python bench/bench_distribute.py --data PHANTOMS [--preset ce_guided] [--epochs 3]

Trains three tiny runs (64 px), each in its own process split into two logical CPU
devices (keras_ynet.distribute.use_logical_cpus): ``--distribute none`` seed 0,
``--distribute mirrored`` seed 0 and ``--distribute none`` seed 1, then prints each
epoch's losses and the relative difference of the mirrored run and of the other seed
from the one-device run. The seed-to-seed difference is the noise a mirrored run's
difference is judged against (docs/results.md, "Training on two devices").
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TWO_CPUS_TRAIN = (
    "import sys\n"
    "from keras_ynet.distribute import use_logical_cpus\n"
    "use_logical_cpus(2)\n"
    "from keras_ynet.train import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)
TINY_FLAGS = [
    "--image-size", "64", "--batch-size", "8", "--stem-filters", "4",
    "--stage-widths", "4", "8", "8", "64", "--stage-blocks", "1", "1", "1", "1",
    "--learning-rate", "3e-3",
]  # fmt: skip
TERMS = ("loss", "cls_loss", "seg_loss", "hash_loss")


def run(data: str, out: Path, mode: str, seed: int, preset: str | None, epochs: int) -> list:
    args = ["--data", data, "--out", str(out), "--distribute", mode, "--seed", str(seed)]
    args += ["--epochs", str(epochs), *TINY_FLAGS, *(["--preset", preset] if preset else [])]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPUS_TRAIN, *args], cwd=REPO, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{mode} seed {seed} failed:\n{done.stderr[-2000:]}")
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="a dataset folder (e.g. generated phantoms)")
    p.add_argument("--preset", default=None, help="e.g. ce_guided (default: the default run)")
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            name: run(a.data, Path(tmp) / name, mode, seed, a.preset, a.epochs)
            for name, mode, seed in (
                ("one device", "none", 0),
                ("mirrored x2", "mirrored", 0),
                ("seed 1", "none", 1),
            )
        }
    base = runs["one device"]
    terms = [t for t in TERMS if t in base[0]]
    print(f"preset {a.preset or '(default)'}: epoch losses, and relative difference to one device")
    print("| run | epoch | " + " | ".join(terms) + " |")
    print("|---|---|" + "---|" * len(terms))
    for name, rows in runs.items():
        for epoch, (row, ref) in enumerate(zip(rows, base, strict=True), start=1):
            cells = []
            for t in terms:
                value, reference = float(row[t]), float(ref[t])
                diff = "" if rows is base else f" ({(value - reference) / reference:+.1%})"
                cells.append(f"{value:.4f}{diff}")
            print(f"| {name} | {epoch} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
