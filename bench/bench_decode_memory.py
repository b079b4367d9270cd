"""Peak memory (RSS) of preparing one very large image for the encoder.

    python bench/bench_decode_memory.py [--size 256]

Writes two files at the decode limit (``deploy.preprocess.MAX_PIXELS``) into a temporary
folder: a 16-bit grey 8192 x 8192 PNG (about 150 KB: flat, so it compresses) and an
8000 x 8000 RGB PNG, and prepares each in a fresh process as the device encoder does
(:func:`deploy.preprocess.load_prepared`), printing the process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and, for scale, that of a process that
only imports the same modules. One process per case: ru_maxrss only ever grows, and on
Linux a child starts from its parent's peak, so the files are written by a child too and
this process stays small.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import resource, sys, time
import numpy as np
from deploy import preprocess
path, size = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
if path != "-":
    out = preprocess.load_prepared(path, size, 1)
    assert out.shape == (size, size, 1) and out.dtype == np.uint8
seconds = time.perf_counter() - start
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds)
"""


CASES = {"16-bit grey 8192x8192 PNG": "grey16_8192.png", "RGB 8000x8000 PNG": "rgb_8000.png"}


def write_cases(folder: Path) -> None:
    grey16 = folder / CASES["16-bit grey 8192x8192 PNG"]
    Image.new("I;16", (8192, 8192), 40000).save(grey16)
    rgb = folder / CASES["RGB 8000x8000 PNG"]
    ramp = np.arange(8000, dtype=np.uint8)
    Image.fromarray(
        np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.uint8(7)), -1)
    ).save(rgb)


def peak_mib(path: str, size: int) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, path, str(size)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    rss, seconds = done.stdout.split()
    return float(rss), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="model input side (default 256)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.write is not None:
        return write_cases(args.write)
    size = args.size
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--write", tmp], check=True)
        cases = dict(zip(CASES, (Path(tmp) / name for name in CASES.values()), strict=True))
        baseline, _ = peak_mib("-", size)
        print(f"imports only: peak RSS {baseline:7.1f} MiB")
        for name, path in cases.items():
            rss, seconds = peak_mib(str(path), size)
            kib = path.stat().st_size / 1024
            print(f"{name} ({kib:.0f} KiB): peak RSS {rss:7.1f} MiB, {seconds:.2f} s")


if __name__ == "__main__":
    main()
