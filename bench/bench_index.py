"""Benchmark of the device Hamming index against naive numpy, Annoy and faiss.

Command lines:
    python bench/bench_index.py                                # N = 10k, 100k, 1M (~3 min)
    python bench/bench_index.py --sizes 10000,100000 --queries 200

Data as in docs/targets.md (Hamming search): clustered 64-bit codes (50 random centres,
each bit flipped with probability 0.1), queries from the same distribution, top-10, one
thread. Columns:

* build s: building the searchable structure from packed codes (``HammingIndex``:
  ``batch_add`` + ``build``; faiss: ``add``);
* disk MB: the saved index folder (codes.npy, index.json with the ids, index.ann) or
  the faiss file;
* exact_topk numba / numpy: the same function forced onto the compiled kernel or the
  numpy passes (``YNET_EXACT_SCAN``; ``--scans``); ``HammingIndex.search`` runs the default;
* q/s: queries per second (best of ``--repeats`` for exact_topk and faiss; the naive
  scan and the one-query-per-call rows run on the first ``--naive-queries`` queries);
* recall@k: share of the exact top-k found, a code tied with the exact k-th distance
  counting as found (tie order is the only thing faiss does differently);
* x bound: time per query over the memory-bandwidth bound of one exact scan (N * bits/8
  bytes read at the measured read bandwidth).

faiss is an optional reference (``pip install faiss-cpu``), not a project dependency.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread, set before numpy or faiss load a thread pool

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deploy import codes  # noqa: E402
from deploy.exact import SCAN_ENV, exact_topk, scan_path  # noqa: E402
from deploy.index import HammingIndex  # noqa: E402

try:
    import faiss
except ImportError:
    faiss = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--naive-queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--n-trees", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bandwidth-mb", type=int, default=1024)
    parser.add_argument("--no-annoy", action="store_true")
    parser.add_argument("--scans", default="numba,numpy", help="exact scans to time")
    args = parser.parse_args(argv)

    bandwidth, first = read_bandwidth(args.bandwidth_mb)
    print(
        f"read bandwidth: {bandwidth / 1e9:.1f} GB/s, best of 3 sums over {args.bandwidth_mb} "
        f"MiB (first sum: {first / 1e9:.1f} GB/s); the bound below uses the best"
    )
    print(f"faiss: {faiss.__version__ if faiss else 'not installed'}")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} on {os.cpu_count()} CPUs; default scan: {scan_path()}\n")
    header = f"{'N':>9} {'method':<34} {'build s':>8} {'disk MB':>8} {'q/s':>8} {'recall':>7} {'x bound':>8}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 2, (50, args.bits), dtype=np.uint8)
    for n in [int(s) for s in args.sizes.split(",")]:
        db_bits = clustered(rng, centres, n)
        q_bits = clustered(rng, centres, args.queries)
        for row in bench_size(args, db_bits, q_bits, bandwidth):
            print(f"{n:>9} " + row, flush=True)
    return 0


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), n)]
    return picked ^ (rng.random(picked.shape) < 0.1).astype(np.uint8)


def read_bandwidth(megabytes: int) -> tuple[float, float]:
    """Bytes/s of one-thread numpy sums over a large array: (best of 3, first)."""
    array = np.ones(megabytes * 2**20 // 8)
    times = [timed(array.sum)[1] for _ in range(3)]
    return array.nbytes / min(times), array.nbytes / times[0]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def bench_size(args, db_bits: np.ndarray, q_bits: np.ndarray, bandwidth: float):
    n, k = len(db_bits), args.k
    db_packed, q_packed = codes.pack_bits(db_bits), codes.pack_bits(q_bits)
    db_words, q_words = codes.packed_to_words(db_packed), codes.packed_to_words(q_packed)
    bound = n * args.bits / 8 / bandwidth  # seconds per query, one scan from DRAM
    truth_idx, truth_dist = exact_topk(q_words, db_words, k)
    kth = truth_dist[:, -1:]

    def recall(dist: np.ndarray, rows=slice(None)) -> float:
        return float(np.mean(dist <= kth[rows]))

    def row(name, build, disk, per_query, dist, rows=slice(None)):
        disk_s = f"{disk / 1e6:8.1f}" if disk is not None else f"{'-':>8}"
        build_s = f"{build:8.2f}" if build is not None else f"{'-':>8}"
        return (
            f"{name:<34} {build_s} {disk_s} {1 / per_query:8.0f} "
            f"{recall(dist, rows):7.3f} {per_query / bound:8.2f}"
        )

    few = slice(0, min(args.naive_queries, len(q_bits)))
    naive_idx, naive_time = timed(naive_topk, q_words[few], db_words, k)
    assert np.array_equal(naive_idx, truth_idx[few]), "exact_topk differs from the naive scan"
    per_query = naive_time / len(naive_idx)
    yield row("naive numpy (argsort per query)", None, None, per_query, truth_dist[few], few)

    with tempfile.TemporaryDirectory() as tmp:
        index, build = timed(build_index, db_packed, "exact", args.n_trees)
        index.save(Path(tmp, "exact"))
        disk = folder_bytes(Path(tmp, "exact"))
        for scan in args.scans.split(","):
            os.environ[SCAN_ENV] = scan
            exact_topk(q_words[:1], db_words, k)  # the kernel's compile or cache load
            best = min(timed(exact_topk, q_words, db_words, k)[1] for _ in range(args.repeats))
            yield row(f"exact_topk {scan} (batched)", build, disk, best / len(q_bits), truth_dist)
            one = min(timed(one_by_one, q_words[few], db_words, k)[1] for _ in range(args.repeats))
            name = f"exact_topk {scan} (1 query per call)"
            yield row(name, None, None, one / few.stop, truth_dist[few], few)
        del os.environ[SCAN_ENV]  # the index below: the default scan
        _, search_time = timed(index.search, q_packed, k)
        yield row("HammingIndex.search (exact)", None, None, search_time / len(q_bits), truth_dist)
        del index

        if not args.no_annoy:
            index, build = timed(build_index, db_packed, "annoy", args.n_trees)
            index.save(Path(tmp, "annoy"))
            disk = folder_bytes(Path(tmp, "annoy"))
            for factor in (1, 10):
                index.search_k = factor * args.n_trees * k
                (_, dist), elapsed = timed(index.search, q_packed, k)
                name = f"Annoy {args.n_trees} trees, {factor}x search_k, rerank"
                yield row(name, build if factor == 1 else None, disk, elapsed / len(q_bits), dist)
            del index
            shutil.rmtree(Path(tmp, "annoy"))

        if faiss is not None:
            faiss.omp_set_num_threads(1)
            flat, build = timed(faiss_index, db_packed, args.bits)
            faiss.write_index_binary(flat, str(Path(tmp, "faiss.index")))
            disk = Path(tmp, "faiss.index").stat().st_size
            elapsed = min(timed(flat.search, q_packed, k)[1] for _ in range(args.repeats))
            dist, _ = flat.search(q_packed, k)
            yield row("faiss IndexBinaryFlat", build, disk, elapsed / len(q_bits), dist)


def naive_topk(q_words: np.ndarray, db_words: np.ndarray, k: int) -> np.ndarray:
    """XOR + bitwise_count + stable argsort, one query at a time (the textbook scan)."""
    # Summed over the words (it read only the first one before, right for 64 bits only).
    dist = (np.bitwise_count(db_words ^ q).sum(axis=1, dtype=np.int32) for q in q_words)
    return np.stack([np.argsort(d, kind="stable")[:k] for d in dist])


def one_by_one(q_words: np.ndarray, db_words: np.ndarray, k: int) -> None:
    for j in range(len(q_words)):
        exact_topk(q_words[j : j + 1], db_words, k)


def build_index(packed: np.ndarray, backend: str, n_trees: int) -> HammingIndex:
    index = HammingIndex(packed.shape[1] * 8, "bench", n_trees=n_trees, backend=backend)
    index.batch_add(packed, range(len(packed)))
    index.build()
    return index


def faiss_index(packed: np.ndarray, bits: int):
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(packed)
    return flat


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


if __name__ == "__main__":
    raise SystemExit(main())
