"""Benchmark: opening a real index folder for search, format 2 (items.jsonl + offsets)
against format 1 (every id and metadata in the JSON sidecar), at 1M and 10M items.

Command lines:
    python bench/bench_index_open.py                       # format 2 at 1M and 10M, format 1 at 1M
    python bench/bench_index_open.py --sizes 1000000 --format1-sizes 1000000,10000000

For each size N a real index folder is written into ``--tmp`` (default /tmp) and deleted
afterwards: 64-bit random codes, ids ``case-0000001``..., metadata
``{"path": "images/case-0000001.png", "label": "benign" | "malignant"}``. Format 2 is
written by :func:`deploy.index_store.write_index` (the code every save runs), fed lazy
sequences so the writer's own memory stays small; format 1 is written here as the
format-1 code wrote it (``json.dumps(sidecar, indent=1)`` with ``ids`` and ``metadata``),
because the current code only writes format 2.

Each measurement runs in a fresh child process (its memory figures are its own):
:meth:`deploy.mapped_index.MappedIndex.open`, then one top-10 search of one query
(:meth:`lookup`: the exact scan, one thread, and the 10 hits' ids and metadata), then
1000 :meth:`item` reads at random positions. The scan kernel's compile or cache load
runs before, untimed, on a 4096-code array (it costs the same in both formats). Columns:
open ms, search ms (the first: it faults the codes' pages into the map), again ms (a
second search, another query), item us (mean of the 1000), RSS MB after imports (the baseline),
then the growth after open and after the search, anonymous (Python objects, copies) and
file-backed (mapped pages), and peak MB (VmHWM). The files were just written, so they
are in the page cache: open and search times are warm-cache figures. ``--load`` also
times :meth:`deploy.index.HammingIndex.load` (what ``index add`` / ``remove`` and a
folder with an Annoy forest use: every file hashed, every item parsed and checked) in
another fresh process, with its peak memory.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deploy import index_store  # noqa: E402
from deploy.index import HammingIndex  # noqa: E402

LABELS = ("benign", "malignant")
_CHUNK = 1 << 22  # codes generated at a time


class LazyItems:
    """ids or metadata of N items, made on demand (a Sequence for the writer)."""

    def __init__(self, n: int, kind: str):
        self.n, self.kind = n, kind

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.kind == "ids":
            return f"case-{i:07d}"
        return {"path": f"images/case-{i:07d}.png", "label": LABELS[i % 2]}

    def __iter__(self):
        return (self[i] for i in range(self.n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="format-2 sizes")
    parser.add_argument("--format1-sizes", default="1000000", help="format-1 sizes")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--load", action="store_true", help="also time HammingIndex.load (the writer's path)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    jobs = [(2, int(n)) for n in args.sizes.split(",") if n]
    jobs += [(1, int(n)) for n in args.format1_sizes.split(",") if n]
    print(
        f"{'format':>6} {'items':>11} {'write s':>8} {'folder MB':>10} {'open ms':>9} "
        f"{'search ms':>10} {'again ms':>9} {'item us':>8} {'base MB':>8} {'open +anon':>10} "
        f"{'open +file':>10} {'search +anon':>12} {'search +file':>12} {'peak MB':>8}"
    )
    for version, n in sorted(jobs, key=lambda j: (j[1], -j[0])):
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_open_") as work:
            folder = Path(work) / "idx"
            start = time.perf_counter()
            write_folder(folder, n, version, args.seed)
            written = time.perf_counter() - start
            size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            job = {"folder": str(folder), "seed": args.seed}
            done = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(job)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            r = json.loads(done.stdout)
            load = ""
            if args.load:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps({**job, "load": True})],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                loaded = json.loads(done.stdout)
                load = f"  load {loaded['load_s']:.2f} s, peak {loaded['peak_mb']:.0f} MB"
            print(
                f"{version:>6} {n:>11,} {written:>8.1f} {size:>10.0f} {r['open_ms']:>9.2f} "
                f"{r['search_ms']:>10.1f} {r['again_ms']:>9.1f} {r['item_us']:>8.1f} {r['base_mb']:>8.0f} "
                f"{r['open_anon_mb']:>10.1f} {r['open_file_mb']:>10.1f} "
                f"{r['search_anon_mb']:>12.1f} {r['search_file_mb']:>12.1f} {r['peak_mb']:>8.0f}"
                f"{load}",
                flush=True,
            )
            shutil.rmtree(folder)
    return 0


def write_folder(folder: Path, n: int, version: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    packed = np.concatenate(
        [rng.integers(0, 256, (min(_CHUNK, n - s), 8), np.uint8) for s in range(0, n, _CHUNK)]
        or [np.empty((0, 8), np.uint8)]
    )
    config = HammingIndex(bits=64, fingerprint="bench+float", backend="exact").get_config()
    ids, metadata = LazyItems(n, "ids"), LazyItems(n, "metadata")
    if version == 2:
        index_store.write_index(folder, config, packed, ids, metadata, None, 0)
        return
    # Format 1, as the format-1 code wrote it: one JSON document with every item.
    folder.mkdir(parents=True)
    np.save(folder / index_store.CODES_FILE, packed)
    sidecar = index_store._sidecar(config, packed, n, 0, 0, "")
    sidecar.update(format_version=1, ids=list(ids), metadata=list(metadata))
    text = json.dumps(sidecar, indent=1)
    del sidecar
    (folder / index_store.SIDECAR_FILE).write_text(text, encoding="utf-8")


def child(job: dict) -> int:
    if job.get("load"):
        start = time.perf_counter()
        index = HammingIndex.load(job["folder"])
        seconds = time.perf_counter() - start
        assert len(index) > 0
        print(json.dumps({"load_s": seconds, "peak_mb": memory()["VmHWM"]}))
        return 0
    from deploy.exact import exact_topk
    from deploy.mapped_index import MappedIndex

    rng = np.random.default_rng(job["seed"] + 1)
    query = rng.integers(0, 256, 8, np.uint8)
    words = rng.integers(0, 2**63, (4096, 1), np.uint64)
    exact_topk(words[:1], words, 10)  # the kernel's compile or cache load, untimed
    base = memory()
    start = time.perf_counter()
    index = MappedIndex.open(job["folder"], threads=1)
    opened = time.perf_counter() - start
    after_open = memory()
    start = time.perf_counter()
    hits = index.lookup(query, 10)
    searched = time.perf_counter() - start
    after_search = memory()
    start = time.perf_counter()
    index.lookup(rng.integers(0, 256, 8, np.uint8), 10)
    again = time.perf_counter() - start
    assert len(hits) == 10 and all(h.id == f"case-{h.position:07d}" for h in hits)
    positions = rng.integers(0, len(index), 1000).tolist()
    start = time.perf_counter()
    for p in positions:
        index.item(p)
    per_item = (time.perf_counter() - start) / len(positions)
    print(json.dumps({
        "open_ms": opened * 1e3, "search_ms": searched * 1e3, "again_ms": again * 1e3, "item_us": per_item * 1e6,
        "base_mb": base["VmRSS"],
        "open_anon_mb": after_open["RssAnon"] - base["RssAnon"],
        "open_file_mb": after_open["RssFile"] - base["RssFile"],
        "search_anon_mb": after_search["RssAnon"] - base["RssAnon"],
        "search_file_mb": after_search["RssFile"] - base["RssFile"],
        "peak_mb": memory()["VmHWM"],
    }))  # fmt: skip
    return 0


def memory() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process in MB (/proc/self/status)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {
        key: int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    }


if __name__ == "__main__":
    raise SystemExit(main())
