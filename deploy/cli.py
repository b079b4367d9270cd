"""Command line of the device runtime: build and grow a Hamming index, search it.

    python -m deploy index build --encoder ART/encoder.onnx --data DATA --out INDEX
    python -m deploy index build --encoder ART/encoder.onnx --images FOLDER --out INDEX \\
        --backend annoy --n-trees 50
    python -m deploy index add --index INDEX --encoder ART/encoder.onnx new1.png new2.png
    python -m deploy index add --index INDEX --encoder ART/encoder.onnx --images NEW --compact
    python -m deploy index add --index INDEX --encoder ART/encoder.onnx --replace fixed.png
    python -m deploy index remove --index INDEX --id scan-17 scan-18 [--compact]
    python -m deploy index info --index INDEX [--json]
    python -m deploy index verify --index INDEX   # exit 1 and one line naming a bad file
    python -m deploy index export-engine --index INDEX --format opensearch --out bulk.ndjson
    python -m deploy search --index INDEX --encoder ART/encoder.onnx --image q.png -k 10 --json
    python -m deploy search --index INDEX --encoder ART/encoder.onnx --image q.png -k 5 \\
        --report why.html          # also why.png, a contact sheet (--sheet PATH to choose)
    python -m deploy serve --index INDEX --encoder ART/encoder.onnx [--port 8000] [--json]

``--data`` takes a dataset folder with ``labels.csv`` (train split by default, ``--split``);
``--images`` a folder searched recursively (ids are relative paths). Images are prepared
as the encoder's ``encoder.json`` says; files that cannot be read are listed and the
command fails without writing, unless ``--skip-bad`` (then they are skipped and listed).
A multi-frame DICOM (cine loop) is encoded by ``--frames`` (:mod:`deploy.cine`: its
Representative Frame Number, else the middle frame, by default); ``--us-region`` encodes
only a DICOM's declared ultrasound region (:mod:`deploy.ultrasound`).
An index made by another encoder (fingerprint or bit length) is refused. ``--report``
writes :mod:`deploy.report`'s "why it matched" page: each hit with its distance, label
and per-grid-cell bit agreement with the query (a hit whose file is gone gets a
placeholder and a note). Errors print one line, ``error: ...``, and exit 1; ``--debug``
shows the traceback instead (:func:`deploy.errors.run_command`, as every command line).

Every command takes ``--json``: its result as one JSON document on stdout (messages and
skipped files go to stderr). The subcommands live in :mod:`deploy.cli_build` (``index
build``), :mod:`deploy.cli_index` (``index add``), :mod:`deploy.cli_export` (``index
export-engine``), :mod:`deploy.cli_manage` (``index remove``, ``info``,
``verify``), :mod:`deploy.cli_search` (``search``) and :mod:`deploy.cli_serve` (``serve``,
a local search service); this module holds the parser and
``main``, and imports them only to run one, so ``--help`` is quick.

``index build`` streams (:mod:`deploy.cli_build`): batches go to a journal beside the
index as they are encoded (``--workers N`` processes), and an interrupted build resumes
when the same command is run again (``--restart`` starts over); so does a build failed
by unreadable files, trying only those files again.

Writers of one index (``index build``, ``index add``) run one after the other: a second
one waits for the first (``--lock-timeout SECONDS`` to give up) and ``index add`` reads the
index only once it holds the lock, so it adds to what the first one wrote. ``search``
never overwrites a file without ``--overwrite``, and never the query image or an indexed
image at all.

(Over 300 lines: it is every command's parser, in one module that imports nothing heavy,
so that ``--help`` stays fast.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploy.errors import run_command
from deploy.sources import SPLIT_CHOICES  # standard library only: --help stays fast

# Kept in step with deploy.index.BACKENDS, deploy.cine.DEFAULT and
# deploy.engine_export.FORMATS (a test checks it): importing those modules here would
# load numpy and Annoy just to print --help.
BACKENDS = ("auto", "exact", "annoy")
CINE_DEFAULT = "representative"
ENGINE_FORMATS = ("opensearch", "elasticsearch")  # deploy.engine_export.FORMATS
# The search service's defaults (deploy.cli_serve): loopback only unless a token is set.
LOOPBACK = "127.0.0.1"
TOKEN_ENV = "YNET_SERVE_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument(
        "--json", action="store_true", help="print the result as one JSON document on stdout"
    )
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

    index = commands.add_parser(
        "index", help="build, grow, shrink, describe or check an index"
    ).add_subparsers(dest="action", required=True)
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
    build.add_argument(
        "--workers",
        type=int,
        default=1,
        help="encoding processes, each with --threads runtime threads (default 1 each); "
        "default: one process",
    )
    build.add_argument(
        "--restart",
        action="store_true",
        help="discard what an interrupted or failed build of --out left (default: resume it, "
        "trying again only the files not yet encoded)",
    )

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
    add.add_argument(
        "--replace",
        action="store_true",
        help="give ids already in the index their new code (default: refuse them)",
    )

    remove = index.add_parser(
        "remove", parents=[common, writing], help="remove items by id (no encoder needed)"
    )
    remove.add_argument("--index", required=True, type=Path, help="index folder")
    remove.add_argument(
        "--id", required=True, nargs="+", metavar="ID", help="ids to remove (all or nothing)"
    )
    remove.add_argument(
        "--compact", action="store_true", help="rebuild the Annoy forest over the items left"
    )
    export = index.add_parser(
        "export-engine",
        parents=[common],
        help="write the codes as OpenSearch / Elasticsearch bulk NDJSON (+ the mapping)",
    )
    export.add_argument("--index", required=True, type=Path, help="index folder")
    export.add_argument("--format", required=True, choices=ENGINE_FORMATS)
    export.add_argument(
        "--out", required=True, type=Path, help="bulk NDJSON file (mapping: OUT.mapping.json)"
    )
    export.add_argument("--name", help="engine index name (default: the folder's name)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    for name, what in (
        ("info", "items, bits, backend, encoder, dates and sizes of an index"),
        ("verify", "re-check every stored sha256 and count of an index (exit 1 on a problem)"),
    ):
        sub = index.add_parser(name, parents=[common], help=what)
        sub.add_argument("--index", required=True, type=Path, help="index folder")

    search = commands.add_parser(
        "search", parents=[common, encoding], help="the k nearest indexed images to a query image"
    )
    search.add_argument(
        "--index",
        required=True,
        type=Path,
        nargs="+",
        help="index folder; several (e.g. one per site): searched as one, codes memory-mapped",
    )
    search.add_argument("--image", required=True, type=Path, help="query image")
    search.add_argument(
        "--frame", type=int, help="0-based frame of a multi-frame query (DICOM, GIF, TIFF)"
    )
    _add_us_region(search)
    search.add_argument(
        "-k", "--k", type=int, default=10, help="results (all if more than indexed)"
    )
    search.add_argument(
        "--report", type=Path, help="write a 'why it matched' HTML report (and a PNG sheet)"
    )
    search.add_argument(
        "--sheet", type=Path, help="contact sheet PNG (default: the --report path with .png)"
    )
    search.add_argument(
        "--overwrite", action="store_true", help="replace an existing report or sheet file"
    )
    serve = commands.add_parser(
        "serve",
        parents=[common, writing],
        help="a local search service: JSON API and a web page (see deploy.cli_serve)",
    )
    serve.add_argument("--index", required=True, type=Path, help="index folder")
    serve.add_argument(
        "--encoder",
        required=True,
        type=Path,
        help="encoder.onnx or .tflite, with encoder.json beside it",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=1,
        help="runtime threads per request (default 1: concurrent requests use the cores)",
    )
    serve.add_argument(
        "--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    serve.add_argument(
        "--token",
        help=f"require 'Authorization: Bearer TOKEN' on every API request (default: "
        f"${TOKEN_ENV}); needed for a --host other than loopback",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=64,
        help="largest request body accepted, MiB (default 64)",
    )
    serve.add_argument(
        "--store",
        type=Path,
        help="folder for images added through the service (default: INDEX.images)",
    )
    return parser


def _add_sources(parser: argparse.ArgumentParser, allow_files: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=not allow_files)
    group.add_argument("--data", type=Path, help="dataset folder with labels.csv")
    group.add_argument("--images", type=Path, help="folder of images (recursive)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
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
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument(
        "--frames",
        default=CINE_DEFAULT,
        metavar="POLICY",
        help="frame of a multi-frame DICOM (cine loop) to encode: representative (its "
        "Representative Frame Number, else the middle frame; default), middle, all (one "
        "entry per frame, ids ID#frame=K) or a 0-based number",
    )
    frames.add_argument("--frame", type=int, dest="frame_number", help="0-based frame: --frames N")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="index the readable files and list the others (default: fail, write nothing)",
    )
    _add_us_region(parser)


def _add_us_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--us-region",
        action="store_true",
        help="encode only the ultrasound region a DICOM declares (the largest 2D one of "
        "(0018,6011)); files declaring none are used whole",
    )


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (0 ok, 1 error, 2 usage, 130 Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    batch_size, threads = getattr(args, "batch_size", 1), getattr(args, "threads", None)
    if batch_size < 1 or (threads is not None and threads < 1):
        parser.error("--batch-size and --threads must be >= 1")
    if hasattr(args, "frames"):
        from deploy.cine import parse_policy  # standard library only

        try:
            args.frames = parse_policy(
                str(args.frame_number) if args.frame_number is not None else args.frames
            )
        except ValueError as err:
            parser.error(str(err))
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        # More runtime threads than CPUs only adds switching (and a huge number makes
        # the runtime fail deep inside); a usage error names the limit instead.
        parser.error(
            f"--threads {args.threads} is more than the {cpus} CPU(s) this process may use"
        )
    # The commands are imported here, not at the top: ``--help`` and usage errors then
    # answer without loading numpy, the runtimes or Pillow.
    if args.command == "search":
        from deploy.cli_search import cmd_search as command
    elif args.command == "serve":
        from deploy.cli_serve import cmd_serve as command
    elif args.action == "build":
        from deploy.cli_build import cmd_build as command
    elif args.action == "add":
        from deploy.cli_index import cmd_add as command
    elif args.action == "export-engine":
        from deploy.cli_export import cmd_export_engine as command
    else:
        from deploy import cli_manage

        command = getattr(cli_manage, f"cmd_{args.action}")
    return run_command(lambda: command(args), args.debug)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
