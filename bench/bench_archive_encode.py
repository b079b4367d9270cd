"""Benchmark: encoding an archive into an index, 1 and 2 cores, threads vs processes.

Command lines:
    python bench/bench_archive_encode.py                   # 5000 images, 256 px (~5 min)
    python bench/bench_archive_encode.py --images 400 --image-size 128

An untrained default YNet (``--image-size`` square, grey, 64 bits; bit thresholds fitted
on phantoms, as after training) is exported as ``python -m export`` does, in a child
process (TensorFlow stays out of this process, whose children's memory is measured).
The archive is ``--images`` PNG files (copies of 40 phantoms, ``--source-size`` px,
in folders of 100), which the encoder decodes and resizes like any archive. Each row
runs ``python -m deploy index build --images ARCHIVE`` in a fresh process:

* 1 core: ``--workers 1 --threads 1``;
* 2 cores, threads: ``--workers 1 --threads 2`` (one ONNX Runtime session, 2 intra-op
  threads; decoding stays on one core);
* 2 cores, processes: ``--workers 2 --threads 1`` (two sessions in two processes).

Columns: wall s (the whole command, start-up included), images/s, speed-up over the
1-core row, CPU s and cpu/wall (CPU time of the command and its workers: near 2 when two
cores were really used; less when other work held one), peak MB (VmHWM of the command's main process: it must not grow with the
archive, the codes go to disk batch by batch). Then the resume check: a 2-process build
is interrupted (SIGINT) once half the images are in its journal and rerun; the rerun reports how many images the
journal already held, and the index is checked equal to the uninterrupted one. Last the
bad-file check: one PNG in the middle of the archive is cut in half, a 2-process build
fails on it (exit 1, no index, its journal kept); the PNG is repaired and the same
command rerun: it encodes only that file, and the index equals the uninterrupted one.

The load average is printed first: other work on the machine's cores lowers the 2-core
rows, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
last_cpu = 0.0  # CPU seconds of the last run, its worker processes included

# Runs the command line and prints its main process's peak resident memory (VmHWM).
_MEASURED = r"""
import sys
import deploy.cli
rc = deploy.cli.main(sys.argv[1:])
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print("VmHWM_kB", status["VmHWM"].split()[0], file=sys.stderr)
sys.exit(rc)
"""

_EXPORT = r"""
import sys
from pathlib import Path
import keras
from keras_ynet.ynet_codes import calibrate_bit_thresholds
from keras_ynet.model import YNet
from keras_ynet.phantoms import make_phantoms
from keras_ynet.pipeline import load_arrays
from keras_ynet.saving import save_ynet
from export.exporter import export_encoder

work, size, source = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
spec = make_phantoms(work / "phantoms", n_per_class=20, image_size=source, kind="chest")
keras.utils.set_random_seed(0)
model = YNet(input_shape=(size, size, 1), bits=64, num_classes=len(spec.class_names),
             class_names=spec.class_names)
images, _ = load_arrays(spec.records, size, 1)
calibrate_bit_thresholds(model, images)
save_ynet(model, work / "model.keras")
export_encoder(work / "model.keras", spec.root, work / "art", int8=False, log=lambda m: None)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--image-size", type=int, default=256, help="encoder input side")
    parser.add_argument("--source-size", type=int, default=512, help="archive image side")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory(prefix="bench_archive_") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _EXPORT, work, str(args.image_size), str(args.source_size)],
            env=env, cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"export failed: {done.stderr.strip()[-3000:]}")
        print(
            f"exported an untrained {args.image_size} px YNet in {time.perf_counter() - start:.0f} s"
        )
        archive = make_archive(work / "phantoms" / "images", work / "archive", args.images)
        encoder = work / "art" / "encoder.onnx"
        print(f"archive: {args.images} PNGs of {args.source_size} px; batch {args.batch_size}")
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n")
        print(
            f"{'run':<34} {'wall s':>7} {'images/s':>9} {'speed-up':>9} {'CPU s':>6} "
            f"{'cpu/wall':>8} {'peak MB':>8}"
        )
        rows = [
            ("1 core (1 process, 1 thread)", 1, 1),
            ("2 cores: 1 process, 2 threads", 1, 2),
            ("2 cores: 2 processes, 1 thread", 2, 1),
        ]
        base, reference = None, None
        for name, workers, threads in rows:
            out = work / f"index-{workers}-{threads}"
            argv = build_argv(encoder, archive, out, workers, threads, args.batch_size)
            wall, peak, _ = run(argv, env)
            rate = args.images / wall
            base = base or rate
            print(
                f"{name:<34} {wall:7.1f} {rate:9.1f} {rate / base:8.2f}x {last_cpu:6.1f} "
                f"{last_cpu / wall:8.2f} {peak:8.0f}",
                flush=True,
            )
            codes = (out / "codes.npy").read_bytes()
            assert reference is None or codes == reference, f"{name}: other codes"
            reference = codes
        out = work / "index-resumed"
        argv = build_argv(encoder, archive, out, 2, 1, args.batch_size)
        proc = subprocess.Popen([sys.executable, "-c", _MEASURED, *argv], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        journal = out.with_name(f".{out.name}.staging") / "journal.jsonl"
        while proc.poll() is None and journaled(journal) < args.images // 2:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.communicate()
        print(
            f"\ninterrupted a 2-process build at {journaled(journal)} journaled images "
            f"(exit {proc.returncode})"
        )
        again, _, result = run(argv, env)
        assert (out / "codes.npy").read_bytes() == reference, "the resumed index differs"
        print(
            f"rerun: {result['resumed_after']} images were in the journal, "
            f"{args.images - result['resumed_after']} encoded in {again:.1f} s; the index "
            "equals the uninterrupted one"
        )
        bad_file_check(encoder, archive, work / "index-bad", reference, args, env)
    return 0


def bad_file_check(encoder, archive, out, reference: bytes, args, env: dict) -> None:
    """A build failed by one damaged PNG, then rerun after the PNG is repaired."""
    bad = sorted(archive.rglob("*.png"))[args.images // 2]
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    argv = build_argv(encoder, archive, out, 2, 1, args.batch_size)
    failed, _, _ = run(argv, env, expect_rc=1)
    journal = out.with_name(f".{out.name}.staging") / "journal.jsonl"
    assert not out.exists(), "a failed build published an index"
    print(
        f"\none damaged PNG: the 2-process build failed in {failed:.1f} s (exit 1, no index), "
        f"its journal kept {journaled(journal)} images"
    )
    bad.write_bytes(good)
    again, _, result = run(argv, env)
    assert (out / "codes.npy").read_bytes() == reference, "the retried index differs"
    print(
        f"repaired and rerun: {result['resumed_after']} images were in the journal, "
        f"{args.images - result['resumed_after']} encoded in {again:.1f} s (start-up "
        "included); the index equals the uninterrupted one"
    )


def journaled(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b"\n")
    except OSError:
        return 0


def make_archive(source: Path, archive: Path, n: int) -> Path:
    pngs = sorted(source.glob("*.png"))
    for i in range(n):
        folder = archive / f"batch{i // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pngs[i % len(pngs)], folder / f"img{i:06d}.png")
    return archive


def build_argv(encoder, archive, out, workers, threads, batch_size) -> list[str]:
    return [
        "index", "build", "--encoder", str(encoder), "--images", str(archive),
        "--out", str(out), "--workers", str(workers), "--threads", str(threads),
        "--batch-size", str(batch_size), "--no-progress", "--json",
    ]  # fmt: skip


def run(argv: list[str], env: dict, expect_rc: int = 0) -> tuple[float, float, dict]:
    global last_cpu
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != expect_rc:
        raise SystemExit(
            f"index build exited {done.returncode}, not {expect_rc}: {done.stderr.strip()[-2000:]}"
        )
    peak = next(
        int(line.split()[1]) / 1024
        for line in done.stderr.splitlines()
        if line.startswith("VmHWM_kB")
    )
    return wall, peak, json.loads(done.stdout) if done.stdout else {}


if __name__ == "__main__":
    raise SystemExit(main())
