"""Command line of the device runtime: build and grow a Hamming index, search it.

    python -m deploy index build --encoder ART/encoder.onnx --data DATA --out INDEX
    python -m deploy index build --encoder ART/encoder.onnx --images FOLDER --out INDEX \\
        --backend annoy --n-trees 50
    python -m deploy index add --index INDEX --encoder ART/encoder.onnx new1.png new2.png
    python -m deploy index add --index INDEX --encoder ART/encoder.onnx --images NEW --compact
    python -m deploy search --index INDEX --encoder ART/encoder.onnx --image q.png -k 10 --json
    python -m deploy search --index INDEX --encoder ART/encoder.onnx --image q.png -k 5 \\
        --report why.html          # also why.png, a contact sheet (--sheet PATH to choose)

``--data`` takes a dataset folder with ``labels.csv`` (train split by default, ``--split``);
``--images`` a folder searched recursively (ids are relative paths). Images are prepared
as the encoder's ``encoder.json`` says; files that cannot be read are skipped and listed.
An index made by another encoder (fingerprint or bit length) is refused. ``--report``
writes :mod:`deploy.report`'s "why it matched" page: each hit with its distance, label
and per-grid-cell bit agreement with the query (a hit whose file is gone gets a
placeholder and a note). Errors print one line, ``error: ...``, and exit 1; ``--debug``
shows the traceback instead.

Writers of one index (``index build``, ``index add``) run one after the other: a second
one waits for the first (``--lock-timeout SECONDS`` to give up) and ``index add`` reads the
index only once it holds the lock, so it adds to what the first one wrote. ``search``
never overwrites a file without ``--overwrite``, and never the query image or an indexed
image at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from deploy import atomic, codes, index_store, report, sources
from deploy.encoder import Encoder, EncodeResult
from deploy.errors import error_line, printable
from deploy.index import BACKENDS, CODES_FILE, SIDECAR_FILE, HammingIndex, Hit


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    encoding = argparse.ArgumentParser(add_help=False)
    encoding.add_argument(
        "--encoder",
        required=True,
        type=Path,
        help="encoder.onnx or .tflite, with encoder.json beside it",
    )
    encoding.add_argument("--threads", type=int, default=None, help="runtime threads")
    encoding.add_argument("--batch-size", type=int, default=32)
    writing = argparse.ArgumentParser(add_help=False)
    writing.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up if another writer holds the index this long (default: wait)",
    )
    encoding.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m deploy", description="Y-Net hash codes on the device: index and search."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build or grow an index").add_subparsers(
        dest="action", required=True
    )
    build = index.add_parser(
        "build", parents=[common, encoding, writing], help="encode images into a new index"
    )
    _add_sources(build, allow_files=False)
    build.add_argument("--out", required=True, type=Path, help="index folder to write")
    build.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="exact scan, Annoy forest + delta, or auto (exact unless tuned)",
    )
    build.add_argument("--n-trees", type=int, default=50, help="Annoy trees")
    build.add_argument("--search-k", type=int, default=-1, help="Annoy candidates per lookup")
    build.add_argument("--overwrite", action="store_true", help="replace an existing index")

    add = index.add_parser(
        "add",
        parents=[common, encoding, writing],
        help="encode images into an index's delta (no rebuild)",
    )
    add.add_argument("--index", required=True, type=Path, help="index folder")
    _add_sources(add, allow_files=True)
    add.add_argument(
        "--compact", action="store_true", help="rebuild the Annoy forest over all items afterwards"
    )

    search = commands.add_parser(
        "search", parents=[common, encoding], help="the k nearest indexed images to a query image"
    )
    search.add_argument("--index", required=True, type=Path, help="index folder")
    search.add_argument("--image", required=True, type=Path, help="query image")
    search.add_argument(
        "--frame", type=int, help="0-based frame of a multi-frame query (DICOM, GIF, TIFF)"
    )
    search.add_argument(
        "-k", "--k", type=int, default=10, help="results (all if more than indexed)"
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument(
        "--report", type=Path, help="write a 'why it matched' HTML report (and a PNG sheet)"
    )
    search.add_argument(
        "--sheet", type=Path, help="contact sheet PNG (default: the --report path with .png)"
    )
    search.add_argument(
        "--overwrite", action="store_true", help="replace an existing report or sheet file"
    )
    return parser


def _add_sources(parser: argparse.ArgumentParser, allow_files: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=not allow_files)
    group.add_argument("--data", type=Path, help="dataset folder with labels.csv")
    group.add_argument("--images", type=Path, help="folder of images (recursive)")
    parser.add_argument(
        "--split",
        choices=sources.SPLIT_CHOICES,
        default="train",
        help="labels.csv rows to index with --data (default: train)",
    )
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="index files outside the --data / --images folder (absolute paths, '..', "
        "symbolic links leaving it); refused by default",
    )
    if allow_files:
        parser.add_argument("files", nargs="*", type=Path, metavar="IMAGE", help="image files")


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--batch-size and --threads must be >= 1")
    cpus = usable_cpus()
    if args.threads is not None and args.threads > cpus:
        # More runtime threads than CPUs only adds switching (and a huge number makes
        # the runtime fail deep inside); a usage error names the limit instead.
        parser.error(
            f"--threads {args.threads} is more than the {cpus} CPU(s) this process may use"
        )
    try:
        if args.command == "search":
            return cmd_search(args)
        return cmd_build(args) if args.action == "build" else cmd_add(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; --debug shows the traceback
        if args.debug:
            raise
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 1


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _make_parent(flag: str, path: Path) -> None:
    """Creates the folder ``path`` goes into; one error naming the flag when it cannot."""
    parent = atomic.real_path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"{flag} {path}: cannot create the folder {parent}: a part of it is a file"
        ) from None
    except OSError as err:
        raise ValueError(
            f"{flag} {path}: cannot create the folder {parent}: {err.strerror}"
        ) from None


def _refuse_same_files(items: list[sources.Item], indexed: list[tuple[str, str]] = ()) -> None:
    """Refuses two items that are one file (same path, link or hard link).

    One image under two ids would be two entries at distance 0 of each other: every
    search would return it twice and push a real neighbour out of the top k. Files are
    compared by device and inode, so a symbolic link or a hard link counts as the same
    file; ``indexed`` holds (id, path) of the items already in the index.
    """
    seen: dict[tuple[int, int], str] = {}
    for item_id, path in [*indexed, *((item.id, str(item.path)) for item in items)]:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue  # a missing file is reported by the encoder
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise ValueError(
                f"ids {printable(seen[key])!r} and {printable(item_id)!r} are the same file "
                f"({printable(path)}): an image is indexed once; remove one of them"
            )
        seen[key] = item_id


def cmd_build(args) -> int:
    _refuse_existing_index(args)  # at once, before the encoding; again under the lock
    encoder = _open_encoder(args)
    index = HammingIndex(
        bits=encoder.bits,
        fingerprint=encoder.codes_id,  # model + float/int8: what the codes are
        n_trees=args.n_trees,
        search_k=args.search_k,
        backend=args.backend,
    )  # before encoding: bad settings fail at once
    items = _items(args)
    _refuse_same_files(items)
    _make_parent("--out", args.out)
    result = _encode(encoder, items, args)
    _add_to(index, items, result)
    index.build()
    with index_store.writer_lock(args.out, args.lock_timeout, _waiting(args.out)):
        _refuse_existing_index(args)  # another build may have finished meanwhile
        index.save(args.out)
    kind = "annoy" if index.uses_annoy() else "exact"
    print(
        f"indexed {len(result)} images ({encoder.bits} bits, encoder {encoder.codes_id}, "
        f"{kind}) -> {printable(args.out)}"
    )
    return 0


def _refuse_existing_index(args) -> None:
    # A crash mid-swap leaves the old index under its backup name: put it back first,
    # or a build without --overwrite would see no index and silently replace it.
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    atomic.repair_directory(args.out, args.lock_timeout, _waiting(args.out))
    if (args.out / SIDECAR_FILE).exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds an index; add --overwrite to replace it")


def _waiting(folder: Path):
    def say(holder: str) -> None:
        print(f"waiting for {holder}, which is writing {folder}", file=sys.stderr)

    return say


def cmd_add(args) -> int:
    given = [args.data is not None, args.images is not None, bool(args.files)]
    if sum(given) != 1:
        raise ValueError("index add takes exactly one of --data DIR, --images DIR or IMAGE files")
    encoder = _open_encoder(args)
    # Read-modify-write under the lock: a concurrent add saved before this one reads the
    # index, so its items are kept (without the lock, the last save would win).
    with index_store.writer_lock(args.index, args.lock_timeout, _waiting(args.index)):
        return _add_locked(args, encoder)


def _add_locked(args, encoder: Encoder) -> int:
    index = _load_index(args.index, encoder, args.encoder)
    items = sources.file_items(args.files) if args.files else _items(args)
    indexed = set(_sidecar(args.index)["ids"])
    known = [item.id for item in items if item.id in indexed]
    if known:
        raise ValueError(
            f"{len(known)} id(s) already in {args.index}, e.g. {known[0]!r}; nothing was added"
        )
    stored = [(i, m.get("path")) for i, m in zip(index._ids, index._metadata, strict=True)]
    _refuse_same_files(items, [(str(i), p) for i, p in stored if isinstance(p, str) and p])
    result = _encode(encoder, items, args)
    _add_to(index, items, result)
    if args.compact:
        index.compact()
    index.save(args.index)
    delta = _sidecar(args.index)["n_delta"]
    in_delta = f", {delta} in the Annoy delta" if index.uses_annoy() else ""
    print(f"added {len(result)} image(s) to {args.index}: {len(index)} items{in_delta}")
    return 0


def cmd_search(args) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    encoder = _open_encoder(args)
    index = _load_index(args.index, encoder, args.encoder)
    sheet = args.sheet
    if args.report is not None and sheet is None:
        sheet = args.report.with_suffix(".png")
    if args.report is not None and sheet.resolve() == args.report.resolve():
        raise ValueError(
            f"--report {args.report} and the sheet would be the same file; use --sheet"
        )
    _refuse_overwrites(args, sheet, index)  # before anything is encoded or written
    for flag, path in (("--report", args.report), ("--sheet", sheet)):
        if path is not None:
            _make_parent(flag, path)
    query_bits = encoder.encode_file(args.image, frame=args.frame)
    hits = index.lookup(query_bits, k=args.k)
    if args.json:
        results = [_hit_json(h) for h in hits]
        print(json.dumps({"query": str(args.image), "k": args.k, "results": results}, indent=2))
    else:
        print(_table(hits))
    if args.report is not None or sheet is not None:
        written = _write_report(args, encoder, query_bits, hits, sheet)
        # With --json, stdout stays one JSON document.
        print(
            f"wrote {' and '.join(map(printable, written))}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _refuse_overwrites(args, sheet: Path | None, index: HammingIndex) -> None:
    """Before anything is encoded or written: no output over an input or an existing file."""
    indexed = [m.get("path") for m in index._metadata]
    inputs = [(args.image, "the query image")]
    inputs += [(Path(p), "an indexed image") for p in indexed if isinstance(p, str) and p]
    outputs = [("--report", args.report), ("--sheet", sheet)]
    report.refuse_overwrites(outputs, inputs, args.overwrite)


def _write_report(args, encoder: Encoder, query_bits, hits: list[Hit], sheet) -> list[Path]:
    """The report of one search; hit codes come from the index, images from their paths."""
    grid = report.HashGrid.from_contract(encoder.contract)
    note = "" if grid else (
        f"{encoder.contract.path} does not record the bit layout (hash_grid): its hash "
        "head's bits have no image region, or it was exported before the layout was "
        "recorded (re-export the model to get the map)"
    )  # fmt: skip
    hit_bits = _hit_codes(args.index, hits, encoder.bits)
    if any(int(np.sum(b != query_bits)) != h.distance for h, b in zip(hits, hit_bits, strict=True)):
        raise ValueError(f"{args.index} changed while it was searched; search again")
    entries = [
        report.Entry(
            id=str(h.id),
            path=Path(h.metadata["path"]) if h.metadata.get("path") else None,
            bits=bits,
            rank=h.rank,
            distance=h.distance,
            label=str(h.metadata.get("label", "")),
            withheld=_not_the_indexed_image(encoder, h, bits),
        )
        for h, bits in zip(hits, hit_bits, strict=True)
    ]
    query = report.Entry(args.image.name, args.image, query_bits)
    source = f"encoder {encoder.model_path} ({encoder.codes_id}), index {args.index}"
    content = report.Report(query, entries, grid, grid_note=note, source=source)
    return report.write_report(content, args.report, sheet, overwrite=args.overwrite)


def _not_the_indexed_image(encoder: Encoder, hit: Hit, bits: np.ndarray) -> str:
    """Why a hit's file must not go into the report ('' when it may).

    The report is for sharing and inlines the images it shows, and ``path`` is only what
    index.json says: an edited or foreign index could name any file on this machine. A
    file is shown only if it encodes to the hit's indexed code, i.e. it is (as far as the
    codes can tell) the image that was indexed; without knowing a private file's code no
    index can name it into a report.
    """
    path = hit.metadata.get("path")
    if not path:
        return ""  # load_tile says there is no file
    try:
        code = encoder.encode_file(path)
    except (ValueError, OSError):
        return ""  # missing or unreadable: load_tile's own note says so, nothing is read
    if not np.array_equal(code, bits):
        return (
            f"{path} does not encode to the indexed code of {hit.id!r} (changed since it was "
            "indexed, or not the indexed image); not shown"
        )
    return ""


def _hit_codes(folder: Path, hits: list[Hit], bits: int) -> np.ndarray:
    """{0, 1} codes of the hits, read from the index's codes file by position."""
    packed = np.load(atomic.recover_directory(folder) / CODES_FILE, mmap_mode="r")
    positions = [h.position for h in hits]
    if positions and max(positions) >= len(packed):
        raise ValueError(f"{folder} changed while it was searched; search again")
    return codes.unpack_bits(np.asarray(packed[positions]).reshape(len(hits), -1), bits)


def _open_encoder(args) -> Encoder:
    return Encoder.open(args.encoder, num_threads=args.threads)


def _load_index(folder: Path, encoder: Encoder, encoder_path: Path) -> HammingIndex:
    """Loads ``folder``, refusing an index made by another encoder, code kind (float or
    int8) or bit length: codes of another kind are at wrong distances from the query."""
    try:
        return HammingIndex.load(
            folder, expected_fingerprint=encoder.codes_id, expected_bits=encoder.bits
        )
    except index_store.IndexMismatchError as err:
        stored = _sidecar_fingerprint(folder)
        why = ""
        if stored.split("+")[0] == encoder.fingerprint and stored != encoder.codes_id:
            why = (
                f"; the index holds {stored.partition('+')[2] or 'unlabelled'} codes of this "
                f"model, the encoder makes {encoder.codes_id.partition('+')[2]} codes"
            )
        raise index_store.IndexMismatchError(
            f"{err}{why} (the encoder is {encoder_path})"
        ) from None


def _sidecar_fingerprint(folder: Path) -> str:
    try:
        value = _sidecar(atomic.recover_directory(folder)).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def _items(args) -> list[sources.Item]:
    if args.data is not None:
        return sources.dataset_items(args.data, args.split, args.allow_outside_paths)
    return sources.folder_items(args.images, args.allow_outside_paths)


def _encode(encoder: Encoder, items: list[sources.Item], args) -> EncodeResult:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = encoder.encode_files(
        [item.path for item in items],
        batch_size=args.batch_size,
        progress=progress,
        ids=[item.id for item in items],
    )
    if not len(result):  # one error line naming the first bad file; --debug lists them all
        if args.debug:
            _print_failures(result.failures)
        more = len(result.failures) - 1
        tail = f" (and {more} more; see --debug)" if more > 0 else ""
        first = f": {_failure(*result.failures[0])}" if result.failures else ""
        raise ValueError(f"none of the {len(items)} images could be read{first}{tail}")
    if result.failures:
        _print_failures(result.failures)
    return result


def _failure(path: str, message: str) -> str:
    return message if path in message else f"{path}: {message}"  # preprocess errors name it


def _print_failures(failures) -> None:
    print(f"skipped {len(failures)} bad files:", file=sys.stderr)
    for path, message in failures:
        print(f"  {printable(_failure(path, message))}", file=sys.stderr)


def _add_to(index: HammingIndex, items: list[sources.Item], result: EncodeResult) -> None:
    metadata = {item.id: item.metadata for item in items}
    index.batch_add(result.packed, result.ids, [metadata[i] for i in result.ids])


def _sidecar(folder: Path) -> dict:
    """The index sidecar (ids, counts); read after HammingIndex.load has validated it."""
    return json.loads((folder / SIDECAR_FILE).read_text(encoding="utf-8"))


def _hit_json(hit: Hit) -> dict:
    return {
        "rank": hit.rank,
        "id": hit.id,
        "distance": hit.distance,
        "label": hit.metadata.get("label", ""),
        "path": hit.metadata.get("path", ""),
    }


def _table(hits: list[Hit]) -> str:
    header = ("rank", "id", "distance", "label", "path")
    # Ids, labels and paths come from files: printed escaped, never as terminal codes.
    rows = [header] + [tuple(printable(v) for v in _hit_json(h).values()) for h in hits]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
