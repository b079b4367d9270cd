"""``python -m deploy index build``: encode a dataset or an archive into a new index.

Streaming and resumable, so an archive of 100k+ images builds like a small dataset:

* the source is read lazily (:func:`deploy.sources.iter_folder_items`) and encoded in
  batches (:func:`deploy.parallel_encode.encode_batches`: ``--workers N`` processes, or
  one process with ``--threads N`` runtime threads), so memory holds a few batches;
* each batch's codes go to the index's staging journal (:mod:`deploy.staging`) as soon
  as they are made; a progress bar with the rate and ETA runs on stderr;
* an interrupted build (Ctrl-C, a crash) rerun with the same command encodes only what
  the journal lacks, and the index is published in one atomic swap only when every
  image is done, so a reader sees the old index or the whole new one;
* the published entries are the journal's in source order (an image retried after a
  failed run is journalled last), less those whose file left the source since an
  earlier run, so a resumed build equals an uninterrupted one over the source as it is.

Every image is encoded as ``index add`` would (:mod:`deploy.index_input`): a cine loop
by the frame policy (``--frames``, :mod:`deploy.cine`; with ``all`` one entry per frame,
ids ``ID#frame=K``), ``--us-region`` in every worker, and an unreadable file fails the
build (every bad file listed with its reason, exit 1, no index published) unless
``--skip-bad``. A failed build keeps its journal of the images that did encode, and the
journal never counts a failure as done, so the same command rerun after repairing or
removing the bad files encodes only those (and ``--skip-bad`` on the rerun publishes
the rest). The journal records the frame policy and ``--us-region`` with the source, so
a resumed build encodes the same file and frame for each id (a rerun with other ones is
refused).

The whole build holds the index folder's writer lock: a second build (or ``index add``)
of the same folder waits for it (``--lock-timeout`` to give up), so two builds never
write one journal. See :mod:`deploy.cli` for the parser and the error contract.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from tqdm import tqdm

from deploy import cine, index_store, sources
from deploy.cli import usable_cpus
from deploy.cli_shared import make_parent, open_encoder, waiting
from deploy.errors import printable
from deploy.index import HammingIndex, writer_lock
from deploy.index_input import (
    check_failures,
    entry_metadata,
    policy_json,
    refuse_existing_index,
    refuse_same_files,
    skipped_json,
    skipped_note,
)
from deploy.locking import real_path
from deploy.parallel_encode import encode_batches
from deploy.staging import Journal, Staged


def cmd_build(args) -> int:
    workers = getattr(args, "workers", 1)
    if workers < 1 or workers > usable_cpus():
        raise ValueError(f"--workers must be between 1 and the {usable_cpus()} usable CPU(s)")
    refuse_existing_index(args)  # at once, before the encoding; again under the lock
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
        refuse_existing_index(args)  # another build may have finished meanwhile
        # Before the staging folder exists: a folder of other files is never replaced.
        index_store.check_destination(real_path(args.out))
        settings = {
            "codes": encoder.codes_id, "bits": encoder.bits, "source": source,
            "frames": args.frames, "us_region": args.us_region,
        }  # fmt: skip
        if getattr(args, "restart", False):
            Journal.discard(args.out)
        journal = Journal.open(args.out, settings)
        resumed = len(journal.done)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        unreadable: list[tuple[str, str, str]] = []  # (id, path, message) from cine.expand
        failures: list[tuple[str, str]] = []  # (path, message) of this run, never journalled
        order: dict[str | int, int] = {}  # each source id's place, filled by _todo
        todo = _todo(args, journal.done, unreadable, order)
        batches = encode_batches(
            args.encoder, todo, batch_size=args.batch_size, workers=workers,
            threads=args.threads, us_region=args.us_region,
        )  # fmt: skip
        with tqdm(total=total, initial=resumed, desc="encoding", unit="img",
                  disable=not progress, smoothing=0.05) as bar:  # fmt: skip
            for batch in batches:
                _take_unreadable(unreadable, failures, bar)
                metadata = [entry_metadata(item, args.us_region) for item in batch.items]
                journal.append(batch.ids, metadata, batch.packed)
                failures += [(path, message) for _id, path, message in batch.failures]
                bar.update(len(batch))
            _take_unreadable(unreadable, failures, bar)
        staged = _in_source_order(journal.read(), order)
        try:
            check_failures(
                len(staged.ids), failures, total, args,
                f"no index was written; the {len(staged.ids)} encoded images are kept in "
                f"{printable(journal.folder)}: repair or remove the bad files and rerun this "
                "command to encode only them",
            )  # fmt: skip
        except ValueError:
            # Without --skip-bad a bad file fails the build as it fails index add. The
            # journal holds only successes, so it is kept for the rerun, unless it holds
            # nothing worth keeping.
            if not staged.ids:
                journal.remove()
            raise
        index.batch_add(staged.packed, staged.ids, staged.metadata)
        index.build()
        index.save(args.out)
        journal.remove()
    kind = "annoy" if index.uses_annoy() else "exact"
    if args.json:
        print(json.dumps({
            "index": str(args.out), "indexed": len(staged.ids), "items": len(index),
            "bits": encoder.bits, "codes": encoder.codes_id, "search": kind,
            "resumed_after": resumed, "workers": workers, **policy_json(args),
            "skipped": skipped_json(failures),
        }, indent=2))  # fmt: skip
        return 0
    again = f", {resumed} of them encoded by an earlier run" if resumed else ""
    print(
        f"indexed {len(staged.ids)} images ({encoder.bits} bits, encoder {encoder.codes_id}, "
        f"{kind}{again}) -> {printable(args.out)}{skipped_note(failures)}"
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


def _expanded(args) -> Iterator[tuple[sources.Item, list[sources.Item], list[tuple[str, str]]]]:
    """Each source item with the items :func:`deploy.cine.expand` makes of it by
    ``--frames`` (its frames) and the ``(path, message)`` of a file it cannot use."""
    for item in _iter_items(args):
        items, failures = cine.expand([item], args.frames)
        yield item, items, failures


def _todo(
    args, done: set, unreadable: list[tuple[str, str, str]], order: dict[str | int, int]
) -> Iterator[sources.Item]:
    """The items a journal lacks, lazily; files :func:`deploy.cine.expand` cannot use
    go to ``unreadable`` as ``(id, path, message)`` (tried again on every run). Every
    item's id, done or not, gets its place in the source in ``order``."""
    for item, items, failures in _expanded(args):
        unreadable.extend((item.id, path, message) for path, message in failures)
        for one in items:
            order.setdefault(one.id, len(order))
            if one.id not in done:
                yield one


def _in_source_order(staged: Staged, order: dict[str | int, int]) -> Staged:
    """The journal's entries by their place in the source, as an uninterrupted build
    orders them (a file retried after a failed run was journalled last), without the
    entries of files no longer in the source (removed since an earlier run)."""
    rows = sorted((order[i], row) for row, i in enumerate(staged.ids) if i in order)
    keep = [row for _place, row in rows]
    return Staged(
        staged.packed[keep], [staged.ids[r] for r in keep], [staged.metadata[r] for r in keep]
    )


def _take_unreadable(unreadable: list, failures: list[tuple[str, str]], bar: tqdm) -> None:
    """Moves the files :func:`_todo` found unreadable so far into ``failures``."""
    failures += [(path, message) for _id, path, message in unreadable]
    bar.update(len(unreadable))
    unreadable.clear()


def _check_items(args) -> int:
    """One pass over the source before encoding: refuses one image (file and frame)
    under two ids and returns the count of images (the progress bar's total, for its
    ETA). Holds (id, path, frame) keys, never images; reads only DICOM headers."""
    count = 0

    def counted() -> Iterator[sources.Item]:
        nonlocal count
        for _item, items, failures in _expanded(args):
            count += len(items) + len(failures)
            yield from items

    refuse_same_files(counted())
    if count == 0:
        where = (args.data if args.data is not None else args.images).expanduser().absolute()
        raise ValueError(f"no image files ({', '.join(sources.IMAGE_SUFFIXES)}) under {where}")
    return count
