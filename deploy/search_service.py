"""What the search service does, without HTTP: one encoder and one index, loaded once,
searched and written by many requests at a time (:mod:`deploy.serve_app` is the web layer).

Searches read the index held open and take no lock: memory-mapped
(:func:`deploy.cli_shared.open_for_search`: opening a format-2 folder costs the same at
any item count, and a hit's id and metadata are read from disk for the hits only), or
loaded when the folder holds an Annoy forest. Writes (add, remove) follow the
command line's rule (``index add`` / ``index remove``): the writer lock of the index
folder (:func:`deploy.locking.writer_lock`) is taken before the index is read from disk,
the index's own ``add``/``replace``/``remove`` change it, ``save`` writes it atomically,
and only then does the new index replace the one in memory. So concurrent adds from many
clients, from other service processes or from ``python -m deploy index add`` queue on
one lock and each one reads what the previous one wrote: nothing is lost. Changes that
arrive while a save runs are applied together, with one read and one save
(:class:`deploy.write_queue.WriteQueue`), each still refused or accepted on its own. A write made
by another process is seen on the next request: the sidecar (``index.json``) is a new
file after every save, and a changed one is loaded again.

Search and add take the command line's image options: ``frame`` (0-based, of a
multi-frame file; an add without one encodes the frame ``index add`` would, the
representative one of :mod:`deploy.cine`) and ``us_region`` (crop a DICOM to its declared
ultrasound region, :mod:`deploy.ultrasound`; off by default, as ``--us-region``). A search
whose query and DICOM hits were not encoded alike says so in ``warning``, as ``search``
does on stderr. The service serves one index folder: searching several sites' folders as
one (``search --index A B ...``) is the command line's for now.

An image added through the service is kept in a store folder (default ``INDEX.images``
beside the index), under the sha256 of its bytes, so the report can show it later; the
same bytes under a second id are refused, as ``index add`` refuses one file under two ids.

(Over 300 lines: the reads, the writes and the store share the index in memory, its
reload stamp and the write queue; split, each part would reach into the others' state.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
from pathlib import Path

from deploy import cine, dicom, dicom_header, report, search_report, sources
from deploy.atomic import atomic_path, recover_directory
from deploy.cli_manage import stored_id
from deploy.cli_shared import load_index, open_for_search
from deploy.encoder import Encoder
from deploy.index import SIDECAR_FILE, HammingIndex
from deploy.index_info import index_info
from deploy.index_input import entry_metadata
from deploy.mapped_index import MappedIndex
from deploy.preprocess import ImageError
from deploy.write_queue import WriteQueue

MAX_ID_CHARS = 256


class ServiceError(ValueError):
    """A request the service refuses; ``status`` is the HTTP status that says why."""

    status = 400


class UnknownId(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class SearchService:
    """The encoder and index of one search service.

    Args:
        index_dir: the index folder (built by ``python -m deploy index build``).
        encoder_path: the encoder model file (``encoder.json`` beside it).
        store_dir: where images added through the service are kept; None: ``INDEX.images``
            beside the index folder.
        threads: runtime threads of the encoder (None: the runtime chooses).
        lock_timeout: seconds a write waits for another writer of the index (None: as long
            as it takes); past it the write fails with ``deploy.locking.LockTimeout``.

    Raises:
        deploy.encoder.EncoderError, deploy.index.IndexMismatchError, IndexFormatError,
        FileNotFoundError: as ``python -m deploy search`` does for the same files.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        encoder_path: str | os.PathLike,
        store_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        lock_timeout: float | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.encoder_path = Path(encoder_path)
        self.encoder = Encoder.open(self.encoder_path, num_threads=threads)
        self.store_dir = (
            Path(store_dir)
            if store_dir is not None
            else self.index_dir.absolute().with_name(self.index_dir.absolute().name + ".images")
        )
        self.lock_timeout = lock_timeout
        self._reload_guard = threading.Lock()
        self._stamp = self._sidecar_stamp()
        self._index = open_for_search(self.index_dir, self.encoder, self.encoder_path)
        self._writes = WriteQueue(
            self.index_dir,
            lambda: load_index(self.index_dir, self.encoder, self.encoder_path),
            self._save,
            lock_timeout,
        )

    # Reading --------------------------------------------------------------------------

    def _sidecar_stamp(self) -> tuple[int, int, int]:
        """Identity of the index on disk: a save replaces the folder, so a new sidecar."""
        try:
            st = os.stat(self.index_dir / SIDECAR_FILE)
        except FileNotFoundError:
            # Between the two renames of another writer's folder swap (the command line's
            # `index add`) the folder is missing: recover_directory waits for that writer
            # (or undoes a crashed one's swap), then the new folder is there.
            recover_directory(self.index_dir)
            try:
                st = os.stat(self.index_dir / SIDECAR_FILE)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no index at {self.index_dir}: {SIDECAR_FILE} is missing"
                ) from None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def index(self) -> HammingIndex | MappedIndex:
        """The current index; opened again when another writer has replaced it on disk."""
        stamp = self._sidecar_stamp()
        if stamp == self._stamp:
            return self._index
        with self._reload_guard:
            stamp = self._sidecar_stamp()  # taken before loading: a newer save reloads again
            if stamp != self._stamp:
                self._index = open_for_search(self.index_dir, self.encoder, self.encoder_path)
                self._stamp = stamp
            return self._index

    def info(self) -> dict:
        """``index info``'s facts, and the encoder that serves the index."""
        return {
            **index_info(self.index_dir),
            "encoder": str(self.encoder.model_path),
            "encoder_codes": self.encoder.codes_id,
            "hash_grid": self._grid_json(),
            "store": str(self.store_dir),
        }

    def _grid_json(self) -> dict | None:
        grid = report.HashGrid.from_contract(self.encoder.contract)
        return None if grid is None else dataclasses.asdict(grid)

    def search(
        self,
        image: Path,
        name: str,
        k: int,
        frame: int | None = None,
        with_report=False,
        us_region: bool = False,
    ) -> dict:
        """The k nearest items to an image file, as ``search --json`` gives them, each with
        its bit agreement (:func:`deploy.search_report.agreement_json`); ``with_report``
        adds the "why it matched" page as ``report_html`` (the image is named ``name``).
        ``frame`` and ``us_region`` as ``search --frame`` and ``--us-region``; ``warning``
        says when the query and the DICOM hits were not encoded alike.

        Raises:
            deploy.preprocess.ImageError: the file is not a readable image.
            ServiceError: bad ``k``, or an empty index.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ServiceError(f"k must be an integer >= 1, got {k!r}")
        query = self.encoder.code_file(image, frame=frame, us_region=us_region)
        index = self.index()  # one index for the whole answer, whatever a writer does
        if not len(index):
            raise ServiceError(f"the index {self.index_dir} is empty: add images first")
        hits = index.lookup(query, k=k)
        hit_codes = index.packed_codes([h.position for h in hits])
        why = search_report.agreement_json(self.encoder, query, hit_codes)
        document = {
            "query": name,
            "k": k,
            "bits": self.encoder.bits,
            "hash_grid": self._grid_json(),
            "results": [{**search_report.hit_json(h), **w} for h, w in zip(hits, why, strict=True)],
        }
        warning = search_report.region_warning(image, us_region, hits, "us_region=1")
        if warning:
            document["warning"] = warning
        if dicom.is_dicom(image):
            document["query_dicom"] = dicom_header.identifiers(image, frame)
        if with_report:
            source = (
                f"encoder {self.encoder.model_path} ({self.encoder.codes_id}), "
                f"index {self.index_dir}"
            )
            content = search_report.report_content(
                self.encoder, index, query, hits, name, image, source, frame, us_region
            )
            # The file is a temporary copy: the page names the upload instead of its path.
            document["report_html"] = report.report_html(content).replace(str(image), name)
        return document

    # Writing --------------------------------------------------------------------------

    def add(
        self,
        image: Path,
        name: str,
        item_id: str,
        label: str = "",
        frame: int | None = None,
        replace: bool = False,
        us_region: bool = False,
    ) -> dict:
        """Encodes an image file and adds it under ``item_id`` (``replace``: an id already
        in the index gets the new code, as ``index add --replace``). A multi-frame file is
        encoded at ``frame``, else at the frame ``index add`` chooses (:mod:`deploy.cine`);
        ``us_region`` as ``index add --us-region``. A DICOM item records its identifiers
        (and the region encoded) as ``index add`` records them.

        Raises:
            deploy.preprocess.ImageError: the file is not a readable image.
            ServiceError: a bad id; Conflict: the id is taken (without ``replace``) or
                the same image is indexed under another id.
            deploy.locking.LockTimeout: another writer kept the index too long.
        """
        check_id(item_id)
        if len(label) > MAX_ID_CHARS or not label.isprintable():
            raise ServiceError(f"a label is at most {MAX_ID_CHARS} printable characters")
        metadata = {"path": "", "label": label, "filename": name}
        item = _frame_item(sources.Item(item_id, image, metadata), frame)
        # Before the lock: encoding is slow.
        code = self.encoder.code_file(image, frame=item.frame, us_region=us_region)
        data = image.read_bytes()
        metadata = entry_metadata(item, us_region)

        def apply(index: HammingIndex) -> dict:
            existing = stored_id(index, item_id)
            if existing is not None and not replace:
                raise Conflict(
                    f"id {item_id!r} is already in {self.index_dir}; nothing was added "
                    "(replace=1 gives it the new image)"
                )
            stored, existed = self._store(data, name)
            # A new file is referenced by no item (an item whose file was deleted by hand
            # is not looked for): the scan of every item's path is needed only otherwise.
            for other, path in index.indexed_paths() if existed else ():
                if path == str(stored) and other != existing:
                    raise Conflict(
                        f"this image is already indexed as {other!r}: an image is indexed once"
                    )
            meta = {**metadata, "path": str(stored)}
            if existing is not None:
                index.replace(code, existing, meta)
            else:
                index.add(code, item_id, meta)
            replaced = existing is not None
            return {"id": item_id, "replaced": replaced, "items": len(index), "path": str(stored)}

        return self._writes.submit(apply)

    def remove(self, item_id: str) -> dict:
        """Removes one item by id (``index remove --id``); its stored image stays.

        Raises:
            UnknownId: the id is not in the index (nothing is removed).
            deploy.locking.LockTimeout: another writer kept the index too long.
        """

        def apply(index: HammingIndex) -> dict:
            existing = stored_id(index, item_id)
            if existing is None:
                raise UnknownId(f"id {item_id!r} is not in {self.index_dir}; nothing was removed")
            index.remove([existing])
            return {"id": item_id, "removed": 1, "items": len(index), "n_delta": index.n_delta}

        return self._writes.submit(apply)

    def _save(self, index: HammingIndex) -> None:
        """Saves a changed index (under the writer lock): it becomes the current one."""
        index.save(self.index_dir)
        with self._reload_guard:
            self._index, self._stamp = index, self._sidecar_stamp()

    def _store(self, data: bytes, name: str) -> tuple[Path, bool]:
        """Keeps an added image's bytes as ``STORE/<sha256>[.suffix]`` (written atomically,
        once); the suffix is kept when it is an image suffix (DICOM is known by it too).
        Returns the path and whether the file was there already."""
        suffix = Path(name).suffix.lower()
        suffix = suffix if suffix in sources.IMAGE_SUFFIXES else ""
        path = self.store_dir / f"{hashlib.sha256(data).hexdigest()}{suffix}"
        existed = path.is_file()
        if not existed:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return path.absolute(), existed


def _frame_item(item: sources.Item, frame: int | None) -> sources.Item:
    """``item`` with the frame to encode: ``frame`` when given (a GIF or TIFF has frames
    too), else for a multi-frame DICOM the one ``index add`` chooses by default
    (:data:`deploy.cine.DEFAULT`), else none."""
    if frame is not None:
        return dataclasses.replace(item, frame=frame)
    items, failures = cine.expand([item], cine.DEFAULT)
    if failures:  # a header that cannot be read: the message names the file
        raise ImageError(failures[0][1])
    return items[0]


def check_id(item_id) -> None:
    """An id given over HTTP: text of 1 to MAX_ID_CHARS printable characters."""
    if not isinstance(item_id, str) or not item_id.strip():
        raise ServiceError("an id is needed (form field 'id'), got none")
    if len(item_id) > MAX_ID_CHARS or not item_id.isprintable():
        raise ServiceError(
            f"an id is 1 to {MAX_ID_CHARS} printable characters, got {len(item_id)} "
            "characters" + ("" if item_id.isprintable() else " with control characters")
        )


def upload_name(filename: str | None) -> str:
    """A safe file name for an uploaded file: its last part, letters, digits and ``._-``
    only (others become ``_``), at most 100 characters; ``upload`` when nothing is left."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "").name)[-100:].lstrip(".")
    return base or "upload"
