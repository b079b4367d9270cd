"""Why a query matched, on the workstation: the search report with predicted masks.

    python -m keras_ynet.explain --model RUN_DIR/model.keras --image Q.png --data DIR \\
        [--split train] [-k 5] --out OUT.html [--sheet OUT.png]

Encodes one dataset split (the database) and the query with the Keras model, ranks the
database by Hamming distance (ties by dataset order, as :mod:`keras_ynet.evaluate` does)
and writes :mod:`deploy.report`'s HTML page and contact sheet (default: OUT.png) for the
top k: per hit its distance, label and per-grid-cell bit agreement with the query, and
the model's predicted segmentation (``mask`` output, argmax per pixel) drawn over the
query and every hit. Errors print one line, ``error: ...``, and exit 1 (``--debug``:
traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy import report
from deploy.preprocess import prepare_image
from deploy.sources import SPLIT_CHOICES as SPLITS
from keras_ynet.cli_json import add_json_flag, run_with_result
from keras_ynet.dataset import DatasetError, load_dataset, load_image


def predict_masks(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Predicted mask classes (N, S, S) uint8: argmax of the ``mask`` output per pixel."""
    out = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return np.argmax(out["mask"], axis=-1).astype(np.uint8)


def explain(
    model_path,
    image,
    data,
    out,
    sheet=None,
    split="train",
    k=5,
    batch_size=32,
    log=print,
    overwrite=False,
) -> dict:
    """Searches ``data``'s ``split`` for ``image`` with the model and writes the report.

    The report and sheet never replace the query or a dataset image, and replace another
    existing file only with ``overwrite``.

    Returns:
        ``files``: the files written (the HTML report, then the sheet); ``query``: the
        query's id; ``hits``: rank, id, image, label and Hamming distance of each hit.
    """
    if k < 1:
        raise ValueError(f"-k must be >= 1, got {k}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    sheet = Path(out).with_suffix(".png") if sheet is None else Path(sheet)
    if sheet.resolve() == Path(out).resolve():
        raise ValueError(f"the report and the sheet would both be {out}; name the report .html")
    query = load_image(image)  # bad arguments fail before TensorFlow loads
    spec = load_dataset(data, check_files=False, scan_masks=False)
    records = spec.records if split == "all" else spec.split(split)
    if not records:
        raise ValueError(f"{spec.root / 'labels.csv'}: no rows in split {split!r}")
    from deploy.codes import hamming_distance_matrix
    from keras_ynet.fingerprint import model_fingerprint
    from keras_ynet.hash_head import model_hash_grid  # Keras: not for --help
    from keras_ynet.ranking_metrics import hamming_ranking
    from keras_ynet.saving import load_ynet
    from keras_ynet.ynet_codes import encode_bits

    log(f"loading {model_path}")
    model = load_ynet(model_path)
    inputs = [(Path(image), "the query image")]
    inputs += [(r.image, "a dataset image") for r in spec.records]
    report.refuse_overwrites([("--out", out), ("--sheet", sheet)], inputs, overwrite)
    size, _, channels = model.input_shape_
    query = prepare_image(query, size, channels)
    records, images = _load(records, size, channels, log)
    log(f"encoding {len(records)} {split} images of {spec.name} ({model.bits} bits)")
    db_bits = encode_bits(model, images, batch_size)
    query_bits = encode_bits(model, query[None])[0]
    distances = hamming_distance_matrix(query_bits[None], db_bits)[0]
    top = hamming_ranking(query_bits[None], db_bits)[0][:k]
    log(f"predicting masks of the query and {len(top)} hits")
    masks = predict_masks(model, np.concatenate([query[None], images[top]]), batch_size)
    hits = [
        report.Entry(r.id, r.image, db_bits[i], rank, int(distances[i]), r.label, masks[rank])
        for rank, i in enumerate(top.tolist(), start=1)
        for r in [records[i]]
    ]
    # A query from the dataset shows its id and label; any other file its name and '-'.
    known = {r.image.resolve(): r for r in spec.records}.get(Path(image).resolve())
    query_id, label = (known.id, known.label) if known else (Path(image).name, "")
    layout = model_hash_grid(model)
    content = report.Report(
        query=report.Entry(query_id, Path(image), query_bits, label=label, mask=masks[0]),
        hits=hits,
        grid=report.HashGrid(*layout) if layout else None,
        grid_note=""
        if layout
        else f"the {model.hash_head!r} hash head's bits have no image region",
        mask_classes=list(model.mask_class_names or spec.mask_class_names),
        source=f"model {model_path} ({model_fingerprint(model)}), {len(records)} {split} "
        f"images of {spec.name}",
    )
    written = report.write_report(content, out, sheet, overwrite=overwrite)
    return {
        "files": [str(p) for p in written],
        "query": query_id,
        "hits": [
            {"rank": h.rank, "id": h.id, "image": str(h.path), "label": h.label,
             "distance": h.distance}
            for h in hits
        ],
    }  # fmt: skip


def _load(records, size: int, channels: int, log) -> tuple[list, np.ndarray]:
    """The records' images prepared as training prepares them; unreadable ones skipped."""
    kept, images, failures = [], [], []
    for r in tqdm(records, desc="reading", unit="img", disable=not sys.stderr.isatty()):
        try:
            images.append(prepare_image(load_image(r.image), size, channels))
            kept.append(r)
        except DatasetError as err:
            failures.append(str(err))
    if failures:
        log(f"skipped {len(failures)} unreadable image(s): " + "; ".join(failures[:3]))
    if not kept:
        raise ValueError(f"none of the {len(records)} database images could be read")
    return kept, np.stack(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_ynet.explain",
        description="Why a query matched: search a dataset split with a trained Y-Net and "
        "write an HTML report and a PNG contact sheet (bit agreement + predicted masks).",
    )
    parser.add_argument("--model", required=True, type=Path, help="model.keras of a run")
    parser.add_argument("--image", required=True, type=Path, help="query image")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (labels.csv)")
    parser.add_argument("--split", choices=SPLITS, default="train", help="database rows")
    parser.add_argument("-k", "--k", type=int, default=5, help="hits to show (default 5)")
    parser.add_argument("--out", required=True, type=Path, help="HTML report to write")
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (default: OUT.png)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing report or sheet file"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    def work():
        result = explain(
            args.model, args.image, args.data, args.out, args.sheet, args.split, args.k,
            args.batch_size, log=lambda m: print(m, file=sys.stderr), overwrite=args.overwrite,
        )  # fmt: skip
        print(f"wrote {' and '.join(result['files'])}")
        return 0, result

    return run_with_result(work, args.json, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
