"""Encoding a stream of image files in batches, on one process or several.

:func:`encode_batches` takes items lazily (one batch at a time is read from the source)
and yields each batch's codes in source order, so a caller can append them to disk as it
goes: memory holds a few batches, never the archive. Two ways to use every core, both
ONNX Runtime's own (one session per process, as :class:`deploy.encoder.Encoder` opens):

Every process decodes alike: each item's ``frame`` (a cine loop's frame, chosen by
:mod:`deploy.cine` before the items get here) and ``us_region`` reach
:meth:`deploy.encoder.Encoder.encode_files`, so the codes are the same for any
``workers``.

* ``workers=1``: one session in this process, ``threads`` intra-op threads. Decoding
  and resizing the images (Pillow, numpy) run on one core between the model calls.
* ``workers=N``: N worker processes (``spawn``: a fresh interpreter, no forked runtime
  state), each with its own session of ``threads`` intra-op threads (default 1); each
  decodes and encodes whole batches, so decoding runs in parallel too. At most
  ``2 * N`` batches are in flight, so a slow consumer never lets them pile up.

``bench/bench_archive_encode.py`` measures both ways.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.encoder import Encoder
from deploy.sources import Item


@dataclass
class Batch:
    """One batch's result, in source order.

    Attributes:
        ids, metadata, paths: of the images that encoded.
        items: those images' source items (with their ``frame``), in the same order.
        packed: their codes, uint8 (len(ids), bits / 8).
        failures: ``(id, path, message)`` of the files that could not be read.
    """

    ids: list[str | int]
    metadata: list[dict[str, Any]]
    paths: list[Path]
    packed: np.ndarray
    items: list[Item] = field(default_factory=list)
    failures: list[tuple[str | int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids) + len(self.failures)


def encode_batches(
    encoder_path: str | os.PathLike,
    items: Iterable[Item],
    *,
    batch_size: int = 32,
    workers: int = 1,
    threads: int | None = None,
    us_region: bool = False,
) -> Iterator[Batch]:
    """Codes of ``items``, one :class:`Batch` of up to ``batch_size`` at a time, in order.

    Args:
        encoder_path: the model file (``Encoder.open`` checks it in every process).
        workers: processes encoding in parallel (1: this process).
        threads: intra-op threads per session (None: ONNX Runtime's choice with one
            process, 1 per worker with several).
        us_region: encode only the ultrasound region a DICOM declares
            (:mod:`deploy.ultrasound`); each item's ``frame`` picks a cine loop's frame.
    """
    if batch_size < 1 or workers < 1 or (threads is not None and threads < 1):
        raise ValueError(
            f"batch_size, workers and threads must be >= 1, got {batch_size}, {workers}, {threads}"
        )
    chunks = _chunks(items, batch_size)
    if workers == 1:
        encoder = Encoder.open(encoder_path, num_threads=threads)
        for chunk in chunks:
            yield encode_chunk(encoder, chunk, us_region)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(str(encoder_path), threads or 1, us_region),
    )
    try:
        pending = deque()
        for chunk in chunks:
            pending.append(pool.submit(_encode_in_worker, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # An interruption (Ctrl-C, an error) drops the queued batches; running ones end.
        pool.shutdown(wait=True, cancel_futures=True)


def encode_chunk(encoder: Encoder, chunk: list[Item], us_region: bool = False) -> Batch:
    """One batch through ``encoder``; unreadable files become failures, not errors."""
    result = encoder.encode_files(
        [item.path for item in chunk],
        batch_size=max(1, len(chunk)),
        progress=False,
        ids=[item.id for item in chunk],
        frames=[item.frame for item in chunk],
        us_region=us_region,
    )
    kept = set(result.ids)
    by_id = {item.id: item for item in chunk}
    failed = [item for item in chunk if item.id not in kept]
    return Batch(
        ids=list(result.ids),
        metadata=[by_id[i].metadata for i in result.ids],
        paths=list(result.paths),
        packed=result.packed,
        items=[by_id[i] for i in result.ids],
        failures=[
            (item.id, path, message)
            for item, (path, message) in zip(failed, result.failures, strict=True)
        ],
    )


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_worker_encoder: Encoder | None = None
_worker_us_region = False


def _start_worker(encoder_path: str, threads: int, us_region: bool) -> None:
    global _worker_encoder, _worker_us_region
    # Ctrl-C reaches the whole process group: the parent handles it (drops the queued
    # batches, lets running ones finish); a worker dying mid-batch would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_encoder = Encoder.open(encoder_path, num_threads=threads)
    _worker_us_region = us_region


def _encode_in_worker(chunk: list[Item]) -> Batch:
    return encode_chunk(_worker_encoder, chunk, _worker_us_region)
