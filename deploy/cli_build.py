"""``python -m deploy index build``: encode a dataset or an archive into a new index.

Streaming and resumable, so an archive of 100k+ images builds like a small dataset:

* the source is read lazily (:func:`deploy.sources.iter_folder_items`) and encoded in
  batches (:func:`deploy.parallel_encode.encode_batches`: ``--workers N`` processes, or
  one process with ``--threads N`` runtime threads), so memory holds a few batches;
* each batch's codes go to the index's staging journal (:mod:`deploy.staging`) as soon
  as they are made; a progress bar with the rate and ETA runs on stderr;
* an interrupted build (Ctrl-C, a crash) rerun with the same command encodes only what
  the journal lacks, and the index is published in one atomic swap only when every
  image is done, so a reader sees the old index or the whole new one.

The whole build holds the index folder's writer lock: a second build (or ``index add``)
of the same folder waits for it (``--lock-timeout`` to give up), so two builds never
write one journal. See :mod:`deploy.cli` for the parser and the error contract.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from tqdm import tqdm

from deploy import index_store, sources
from deploy.cli import usable_cpus
from deploy.cli_index import (
    _print_failures,
    _refuse_existing_index,
    _refuse_same_files,
    _with_dicom_ids,
)
from deploy.cli_shared import make_parent, open_encoder, waiting
from deploy.errors import printable
from deploy.index import HammingIndex, writer_lock
from deploy.locking import real_path
from deploy.parallel_encode import encode_batches
from deploy.staging import Journal


def cmd_build(args) -> int:
    workers = getattr(args, "workers", 1)
    if workers < 1 or workers > usable_cpus():
        raise ValueError(f"--workers must be between 1 and the {usable_cpus()} usable CPU(s)")
    _refuse_existing_index(args)  # at once, before the encoding; again under the lock
    encoder = open_encoder(args)  # the model is checked here, before any worker starts
    index = HammingIndex(
        bits=encoder.bits,
        fingerprint=encoder.codes_id,  # model + float/int8: what the codes are
        n_trees=args.n_trees,
        search_k=args.search_k,
        backend=args.backend,
    )  # before encoding: bad settings fail at once
    source = _source(args)
    total = _check_items(args)
    make_parent("--out", args.out)
    with writer_lock(args.out, args.lock_timeout, waiting(args.out)):
        _refuse_existing_index(args)  # another build may have finished meanwhile
        # Before the staging folder exists: a folder of other files is never replaced.
        index_store.check_destination(real_path(args.out))
        settings = {"codes": encoder.codes_id, "bits": encoder.bits, "source": source}
        if getattr(args, "restart", False):
            Journal.discard(args.out)
        journal = Journal.open(args.out, settings)
        resumed = len(journal.done)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        todo = (item for item in _iter_items(args) if item.id not in journal.done)
        batches = encode_batches(
            args.encoder, todo, batch_size=args.batch_size, workers=workers, threads=args.threads
        )
        with tqdm(total=total, initial=resumed, desc="encoding", unit="img",
                  disable=not progress, smoothing=0.05) as bar:  # fmt: skip
            for batch in batches:
                metadata = [
                    _with_dicom_ids(m, p) for m, p in zip(batch.metadata, batch.paths, strict=True)
                ]
                journal.append(batch.ids, metadata, batch.packed, batch.failures)
                bar.update(len(batch))
        staged = journal.read()
        if not staged.ids:
            journal.remove()
            first = f": {staged.failures[0][1]}" if staged.failures else ""
            more = len(staged.failures) - 1
            tail = f" (and {more} more; see --debug)" if more > 0 else ""
            if args.debug:
                _print_failures(staged.failures)
            raise ValueError(f"none of the {total} images could be read{first}{tail}")
        if staged.failures:
            _print_failures(staged.failures)
        index.batch_add(staged.packed, staged.ids, staged.metadata)
        index.build()
        index.save(args.out)
        journal.remove()
    kind = "annoy" if index.uses_annoy() else "exact"
    if args.json:
        print(json.dumps({
            "index": str(args.out), "indexed": len(staged.ids), "items": len(index),
            "bits": encoder.bits, "codes": encoder.codes_id, "search": kind,
            "resumed_after": resumed, "workers": workers,
            "skipped": [{"path": path, "error": message} for path, message in staged.failures],
        }, indent=2))  # fmt: skip
        return 0
    again = f", {resumed} of them encoded before an interruption" if resumed else ""
    print(
        f"indexed {len(staged.ids)} images ({encoder.bits} bits, encoder {encoder.codes_id}, "
        f"{kind}{again}) -> {printable(args.out)}"
    )
    return 0


def _source(args) -> dict:
    """Where the images come from, as the journal records it (a rerun must match)."""
    if args.data is not None:
        return {"data": str(args.data.expanduser().absolute()), "split": args.split}
    return {"images": str(args.images.expanduser().absolute())}


def _iter_items(args) -> Iterator[sources.Item]:
    if args.data is not None:
        return iter(sources.dataset_items(args.data, args.split, args.allow_outside_paths))
    return sources.iter_folder_items(args.images, args.allow_outside_paths)


def _check_items(args) -> int:
    """One pass over the source before encoding: refuses one file under two ids and
    returns the count (the progress bar's total, for its ETA). Holds (id, path) pairs,
    never images."""
    count = 0

    def counted() -> Iterator[sources.Item]:
        nonlocal count
        for item in _iter_items(args):
            count += 1
            yield item

    _refuse_same_files(counted())
    if count == 0:
        where = (args.data if args.data is not None else args.images).expanduser().absolute()
        raise ValueError(f"no image files ({', '.join(sources.IMAGE_SUFFIXES)}) under {where}")
    return count
