"""Benchmark: exact Hamming search over 1M, 10M and 100M memory-mapped 64-bit codes.

Command lines:
    python bench/bench_index_scale.py                          # 1M, 10M, 100M (~6 min)
    python bench/bench_index_scale.py --sizes 1000000 --queries 1000

For each N a ``codes.npy`` of clustered 64-bit codes (50 random centres, each bit
flipped with probability 1/8: the AND of three random words) is written into
``--tmp`` (default /tmp) chunk by chunk and deleted afterwards; 100M codes are 800 MB,
and a size whose file would leave less than 3 GB free disk is skipped with a printed
reason. Every measurement runs in a fresh child process, so its memory figures are its
own. Methods:

* ``mapped``: :func:`deploy.mapped_index.map_codes` (the codes stay on disk, memory-
  mapped) + :func:`deploy.sharded.sharded_topk` with 1 and 2 threads, once per scan
  named in ``--scans`` (``numba``: the compiled kernel, ``numpy``: the numpy passes; set
  through ``YNET_EXACT_SCAN`` in the child; the kernel's compile or cache load happens in
  an untimed warm-up search of one query);
* ``faiss``: faiss ``IndexBinaryFlat`` (the codes read into it), ``omp_set_num_threads``
  1 and 2.

Columns: open s (from nothing to searchable: the map, or reading the file into faiss),
q/s and q/s per thread (best of ``--repeats`` over ``--queries`` queries, top-10), x bound
(time per query over one read of the codes at the measured read bandwidth; batched
queries share a read, so this is a reference, not a floor), cpu/wall (process CPU time
over wall time of the search: near the thread count when the threads overlap, near 1
when they wait for each other, e.g. on the GIL), peak MB (VmHWM: ru_maxrss would
include the parent's peak, inherited across fork) and, at
the end, resident file-backed and anonymous memory (VmRSS split as /proc reports it:
the map shows as file pages, an in-memory copy as anonymous). Exact and faiss distances
are checked equal (the tie order among equal distances is all faiss does differently),
and 2-thread positions equal 1-thread positions.

faiss is an optional reference (``pip install faiss-cpu``): without it those rows are
skipped with a message.
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
from deploy import codes  # noqa: E402
from deploy.exact import exact_topk  # noqa: E402
from deploy.mapped_index import map_codes, words_view  # noqa: E402
from deploy.sharded import sharded_topk  # noqa: E402

MIN_FREE_BYTES = 3 * 10**9
_CHUNK = 1 << 22  # codes generated and written at a time (32 MB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000,100000000")
    parser.add_argument("--queries", default="1000,256,64", help="per size, or one for all")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--scans", default="numba,numpy", help="exact scans to run")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))

    try:
        import faiss  # noqa: F401
    except ImportError:
        faiss = None
        print("faiss is not installed (pip install faiss-cpu): its rows are skipped")
    bandwidth = read_bandwidth()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} on {os.cpu_count()} CPUs (other work shares them)")
    print(f"read bandwidth: {bandwidth / 1e9:.1f} GB/s (best of 3 one-thread sums of 1 GiB)")
    if faiss is not None:
        print(f"faiss {faiss.__version__}")
    sizes = [int(s) for s in args.sizes.split(",")]
    queries = [int(q) for q in args.queries.split(",")]
    queries = queries * len(sizes) if len(queries) == 1 else queries
    threads = [int(t) for t in args.threads.split(",")]
    header = (
        f"{'N':>11} {'method':<22} {'open s':>7} {'q/s':>8} {'q/s/thr':>8} {'x bound':>8} "
        f"{'cpu/wall':>8} {'peak MB':>8} {'file MB':>8} {'anon MB':>8}"
    )
    print(header + "\n" + "-" * len(header), flush=True)
    for n, n_queries in zip(sizes, queries, strict=True):
        free = shutil.disk_usage(args.tmp).free
        if free - 8 * n < MIN_FREE_BYTES:
            print(f"{n:>11} skipped: {free / 1e9:.1f} GB free in {args.tmp}, the codes need "
                  f"{8 * n / 1e9:.1f} GB and 3 GB must stay free")  # fmt: skip
            continue
        work = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.tmp))
        try:
            run_size(args, n, n_queries, threads, work, bandwidth, faiss is not None)
        finally:
            shutil.rmtree(work)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")
    return 0


def run_size(args, n, n_queries, threads, work: Path, bandwidth: float, with_faiss: bool):
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 2**64, 50, dtype=np.uint64, endpoint=False)
    start = time.perf_counter()
    codes_path = work / "codes.npy"
    out = np.lib.format.open_memmap(codes_path, "w+", np.uint8, (n, 8))
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        out[lo:hi] = clustered_words(rng, centres, hi - lo).view(np.uint8).reshape(-1, 8)
    out.flush()
    del out
    np.save(
        work / "queries.npy", clustered_words(rng, centres, n_queries).view(np.uint8).reshape(-1, 8)
    )
    print(f"{n:>11} (wrote {8 * n / 1e6:.0f} MB of codes in {time.perf_counter() - start:.1f} s)")
    bound = n * 8 / bandwidth
    results = {}
    methods = [f"mapped {scan}" for scan in args.scans.split(",")]
    for method in methods + (["faiss"] if with_faiss else []):
        for t in threads:
            job = {"method": method, "threads": t, "work": str(work), "k": args.k,
                   "repeats": args.repeats}  # fmt: skip
            scan = {"YNET_EXACT_SCAN": method.split()[1]} if method != "faiss" else {}
            done = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(job)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "OMP_NUM_THREADS": str(t), **scan},
            )  # fmt: skip
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[(method, t)] = np.load(work / f"{method.replace(' ', '_')}_{t}.npz")
            per_query = r["seconds"] / n_queries
            print(
                f"{n:>11} {method + f', {t} thr':<22} {r['open_s']:7.3f} "
                f"{1 / per_query:8.1f} {1 / per_query / t:8.1f} {per_query / bound:8.2f} "
                f"{r['cpu_s'] / r['seconds']:8.2f} {r['maxrss_mb']:8.0f} {r['rss_file_mb']:8.0f} {r['rss_anon_mb']:8.0f}",
                flush=True,
            )
    one = results[(methods[0], threads[0])]
    for (method, t), r in results.items():
        assert np.array_equal(r["distances"], one["distances"]), f"{method} {t}: distances differ"
        if method != "faiss":
            assert np.array_equal(r["positions"], one["positions"]), f"{method} {t}: order differs"
    print(f"{n:>11} checked: every method's distances equal; every mapped scan's positions equal")


def clustered_words(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """Codes near random centres: each bit flipped with probability 1/8."""
    flips = rng.integers(0, 2**64, (3, n), dtype=np.uint64, endpoint=False)
    return centres[rng.integers(0, len(centres), n)] ^ (flips[0] & flips[1] & flips[2])


def read_bandwidth() -> float:
    array = np.ones(2**27)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        array.sum()
        times.append(time.perf_counter() - start)
    return array.nbytes / min(times)


def child(job: dict) -> int:
    work, k, t = Path(job["work"]), job["k"], job["threads"]
    queries = np.load(work / "queries.npy")
    n = np.load(work / "codes.npy", mmap_mode="r").shape[0]
    start = time.perf_counter()
    if job["method"] != "faiss":
        words = words_view(map_codes(work / "codes.npy", n, 8))
        opened = time.perf_counter() - start
        q_words = codes.packed_to_words(queries)
        exact_topk(q_words[:1], words[:4096], k)  # the kernel's compile or cache load

        def search():
            return sharded_topk(q_words, words, k, threads=t)
    else:
        import faiss

        faiss.omp_set_num_threads(t)
        index = faiss.IndexBinaryFlat(64)
        packed = np.load(work / "codes.npy")
        index.add(packed)
        del packed
        opened = time.perf_counter() - start

        def search():
            distances, positions = index.search(queries, k)
            return positions, distances

    best, cpu = float("inf"), 0.0
    for _ in range(job["repeats"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        positions, distances = search()
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - cpu_start
    name = job["method"].replace(" ", "_")
    np.savez(work / f"{name}_{t}.npz", positions=positions, distances=distances)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kb = lambda key: int(status.get(key, "0 kB").split()[0])  # noqa: E731
    print(json.dumps({
        "open_s": opened, "seconds": best, "cpu_s": cpu,
        "maxrss_mb": kb("VmHWM") / 1024,
        "rss_file_mb": kb("RssFile") / 1024, "rss_anon_mb": kb("RssAnon") / 1024,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
