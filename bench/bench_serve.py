"""Load benchmark of the search service (``python -m deploy serve``) on this machine.

Command lines:
    python bench/bench_serve.py                  # untrained 128 px YNet, 100k codes (~4 min)
    python bench/bench_serve.py --encoder artifacts/rimone/encoder.onnx --images QUERIES/

What it does, in order:

1. The encoder: ``--encoder`` as given, or an untrained default YNet (``--image-size`` px,
   grey, 64 bits) with bit thresholds fitted on fundus phantoms, exported exactly as
   ``python -m export`` does (TensorFlow is needed for this step only). The query images
   are the phantoms (or the files of ``--images``).
2. The index: ``--items`` clustered synthetic codes (bench_index.py's generator: 50
   centres, each bit flipped with probability 0.1) under the encoder's fingerprint,
   saved as an index folder (exact search, as ``index build`` makes by default).
3. In-process rate: :class:`deploy.search_service.SearchService` ``search`` (read the
   file, encode, top-k, the JSON answer with the bit agreement) on one thread, no HTTP:
   the ceiling the service is measured against.
4. The service is started as ``python -m deploy serve --port 0 --json`` (a separate
   process, as a user starts it); ``--clients`` threads, each with its own HTTP
   connection (httpx), send ``--requests`` searches by upload (multipart, k = ``--k``)
   between them. Reported: requests/s over the wall time, p50 and p99 of the latency
   one client sees, errors (any status but 200, or a failed connection), and the CPU
   time per search of the service process and of the clients (this process), beside
   the in-process one: on a machine shared with other work the CPU times say more than
   the wall times.
5. ``--add-clients`` threads add ``--adds`` distinct images (random pixels, one id each)
   at once; afterwards every id must be in the index folder on disk and in the
   service's answer (``/api/health``): "lost" counts those that are not.

Client and service share the machine's cores, as a workstation's browser and service do.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_index import clustered  # noqa: E402

from deploy.encoder import Encoder  # noqa: E402
from deploy.index import HammingIndex  # noqa: E402
from deploy.search_service import SearchService  # noqa: E402
from deploy.sources import folder_items  # noqa: E402


def export_untrained(folder: Path, image_size: int) -> tuple[Path, list[Path]]:
    """An untrained default YNet, thresholds fitted on phantoms, exported; its images."""
    import keras

    from export.exporter import export_encoder
    from keras_ynet.model import YNet
    from keras_ynet.phantoms import make_phantoms
    from keras_ynet.pipeline import load_arrays
    from keras_ynet.saving import save_ynet
    from keras_ynet.ynet_codes import calibrate_bit_thresholds

    spec = make_phantoms(folder / "data", n_per_class=16, image_size=image_size, seed=0)
    keras.utils.set_random_seed(0)
    model = YNet(input_shape=(image_size, image_size, 1), bits=64, class_names=spec.class_names)
    images, _ = load_arrays(spec.records, image_size, 1)
    calibrate_bit_thresholds(model, images)
    save_ynet(model, folder / "model.keras")
    export_encoder(folder / "model.keras", spec.root, folder / "art", log=lambda m: None,
                   keep_flagged_int8=True)  # fmt: skip
    return folder / "art" / "encoder.onnx", [r.image for r in spec.records]


def synthetic_index(encoder: Encoder, n: int, folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (50, encoder.bits), dtype=np.uint8)
    index = HammingIndex(bits=encoder.bits, fingerprint=encoder.codes_id, backend="exact")
    index.batch_add(clustered(rng, centres, n), [f"s{i}" for i in range(n)])
    index.save(folder / "index")
    return folder / "index"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_clients(url: str, clients: int, total: int, request) -> tuple[float, list[float], int]:
    """``total`` calls of ``request(client, i)`` spread over ``clients`` threads (each
    with its own connection); (wall seconds, latencies of the good ones, errors)."""
    import httpx

    def one_client(c: int):
        times, errors = [], 0
        with httpx.Client(base_url=url, timeout=120) as client:
            for i in range(c, total, clients):
                start = time.perf_counter()
                try:
                    ok = request(client, i)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    times.append(time.perf_counter() - start)
                else:
                    errors += 1
        return times, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one_client, range(clients)))
    wall = time.perf_counter() - start
    return wall, [t for ts, _ in results for t in ts], sum(e for _, e in results)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def noise_png(seed: int, size: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, help="exported encoder (default: untrained)")
    parser.add_argument("--images", type=Path, help="folder of query images, with --encoder")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--items", type=int, default=100_000, help="codes in the index")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=800, help="searches in all")
    parser.add_argument("--in-process", type=int, default=200, help="in-process searches")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--adds", type=int, default=80, help="distinct images added")
    parser.add_argument("--add-clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="runtime threads per search (serve --threads)"
    )
    args = parser.parse_args(argv)
    if (args.encoder is None) != (args.images is None):
        parser.error("--encoder and --images go together")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        if args.encoder is None:
            print("exporting an untrained YNet ...", file=sys.stderr, flush=True)
            encoder_path, queries = export_untrained(folder, args.image_size)
        else:
            encoder_path, queries = args.encoder, [i.path for i in folder_items(args.images)]
        encoder = Encoder.open(encoder_path)
        index_dir = synthetic_index(encoder, args.items, folder, args.seed)
        print(f"index: {args.items} codes of {encoder.bits} bits; encoder "
              f"{encoder.image_size}x{encoder.image_size}x{encoder.channels}, "
              f"{len(queries)} query images", flush=True)  # fmt: skip

        service = SearchService(index_dir, encoder_path, threads=args.threads)
        for q in queries[:3]:
            service.search(q, q.name, args.k)  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(args.in_process):
            q = queries[i % len(queries)]
            service.search(q, q.name, args.k)
        in_process = args.in_process / (time.perf_counter() - start)
        in_process_cpu = (time.process_time() - cpu_start) / args.in_process
        del service

        argv = [sys.executable, "-m", "deploy", "serve", "--index", str(index_dir),
                "--encoder", str(encoder_path), "--port", "0", "--json"]  # fmt: skip
        argv += ["--threads", str(args.threads)]
        server = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            ready = json.loads(server.stdout.readline())
            url = ready["url"]
            bodies = [q.read_bytes() for q in queries]

            def search(client, i):
                files = {"file": (queries[i % len(queries)].name, bodies[i % len(bodies)])}
                response = client.post("/api/search", files=files, data={"k": str(args.k)})
                return response.status_code == 200 and len(response.json()["results"]) == args.k

            run_clients(url, args.clients, 4 * args.clients, search)  # warm-up, not counted
            cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
            wall, times, errors = run_clients(url, args.clients, args.requests, search)
            server_cpu = (cpu_seconds(server.pid) - cpu_before) / args.requests
            client_cpu = (time.process_time() - own_before) / args.requests
            rate = args.requests / wall
            print(f"\nsearch by upload, {args.clients} clients, {args.requests} requests, "
                  f"k={args.k}:")  # fmt: skip
            print(f"  in-process (1 thread, no HTTP): {in_process:8.1f} searches/s")
            print(f"  service: {rate:8.1f} requests/s ({rate / in_process:.0%} of in-process), "
                  f"p50 {1000 * percentile(times, 50):.1f} ms, "
                  f"p99 {1000 * percentile(times, 99):.1f} ms, errors {errors}")  # fmt: skip
            print(f"  CPU per search: in-process {1000 * in_process_cpu:.1f} ms, service "
                  f"{1000 * server_cpu:.1f} ms, clients {1000 * client_cpu:.1f} ms")  # fmt: skip

            pngs = [noise_png(args.seed * 10**6 + i, encoder.image_size) for i in range(args.adds)]

            def add(client, i):
                files = {"file": (f"a{i}.png", pngs[i], "image/png")}
                return (
                    client.post("/api/items", files=files, data={"id": f"add-{i}"}).status_code
                    == 201
                )

            wall, times, errors = run_clients(url, args.add_clients, args.adds, add)
            on_disk = set(HammingIndex.load(index_dir).ids)
            lost = sum(f"add-{i}" not in on_disk for i in range(args.adds))
            import httpx

            served = httpx.get(url + "api/health").json()["items"]
            print(f"\nconcurrent adds, {args.add_clients} clients, {args.adds} distinct ids:")
            print(f"  {args.adds / wall:8.1f} adds/s, p50 {1000 * percentile(times, 50):.1f} ms, "
                  f"p99 {1000 * percentile(times, 99):.1f} ms, errors {errors}")  # fmt: skip
            print(f"  afterwards: {len(on_disk)} items on disk, {served} served "
                  f"(expected {args.items + args.adds}); ids lost: {lost}")  # fmt: skip
            print("  (changes that wait together are written in one read-modify-write of the "
                  f"whole {args.items}-item index; an add's latency includes that wait)")  # fmt: skip
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
