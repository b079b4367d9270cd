"""Exports a trained Y-Net encoder for devices and checks it against Keras.

    python -m export --model runs/rimone/model.keras --data ../shared/data/rimone_dl \\
        --out artifacts/rimone

writes ``encoder.onnx``, ``encoder.tflite``, ``encoder_int8.tflite``, ``encoder.json`` (the
host contract, with the model card) and ``parity.json`` into ``--out``, all or nothing: the
folder appears only once the float exports give the same bits as Keras on every checked
image. Progress and the summary go to stdout; stderr carries warnings and, on failure,
one ``error: ...`` line (exit 1; ``--debug`` shows the traceback instead). With ``--json``
stdout is one JSON document (the folder, files and sizes, the parity report, the model
card) and progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from deploy.errors import run_command


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="trained model.keras")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (labels.csv)")
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write")
    parser.add_argument("--no-int8", action="store_true", help="skip encoder_int8.tflite")
    parser.add_argument(
        "--keep-flagged-int8", action="store_true",
        help="write encoder_int8.tflite even when its bit agreement with Keras is below "
        "the minimum (by default such a model is reported in parity.json and left out)",
    )  # fmt: skip
    parser.add_argument(
        "--parity-train", type=int, default=64,
        help="train images checked besides the whole test split (default 64)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-images", type=int, default=200,
        help="train images calibrating the int8 model (default 200)",
    )  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="tracebacks and TensorFlow logs")
    parser.add_argument(
        "--json", action="store_true",
        help="print what was written as one JSON document on stdout (progress: stderr)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.parity_train < 0 or args.calibration_images < 1:
        parser.error("--parity-train must be >= 0 and --calibration-images >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exports; returns 0, or 1 after one ``error: ...`` line (``--debug``: the traceback)."""
    args = parse_args(argv)
    if not args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported

    def work():
        from export.exporter import export_encoder

        report = export_encoder(
            args.model,
            args.data,
            args.out,
            int8=not args.no_int8,
            parity_train=args.parity_train,
            calibration_images=args.calibration_images,
            keep_flagged_int8=args.keep_flagged_int8,
            # stderr is for warnings and errors, and for progress when stdout is JSON
            log=lambda line: print(line, flush=True, file=sys.stderr if args.json else None),
        )
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_summary(report)
        warn_if_flagged(report)

    return run_command(work, args.debug, "interrupted; nothing was written")


def print_summary(report: dict) -> None:
    print(f"exported encoder {report['fingerprint']} to {report['out']}")
    for name, size in report["files"].items():
        print(f"  {name:22s} {size / 1024:9.1f} KiB")
    card = report["model_card"]
    data = card["training_data"]
    figures = "mAP from metrics.json" if card["retrieval"]["source"] else "no retrieval figures"
    print(
        f"  model card: trained on {data['name']} (licence: {data['licence'] or 'not recorded'}"
        f"), {figures}; encoder.json model_card and ONNX metadata"
    )
    n = report["images"]
    for name, entry in report["float"].items():
        ties = entry["tie_bits_differing"]
        same = f"bits identical to Keras but {ties} tie(s)" if ties else "bits identical to Keras"
        print(
            f"  parity {name}: {same} on {n['test']} test + {n['train']} train images "
            f"(max |hash diff| {entry['max_abs_hash_diff']:.2e})"
        )
    int8 = report.get("int8")
    if int8:
        line = (
            f"  int8 {int8['file']}: {100 * int8['bit_agreement']:.2f}% of bits equal to float "
            f"on {int8['images']} images"
        )
        if "map_at_10_change" in int8:
            line += (
                f", mAP@10 {int8['map_at_10_float']:.4f} -> {int8['map_at_10_int8']:.4f} "
                f"({int8['map_at_10_change']:+.4f})"
            )
        print(line)


def warn_if_flagged(report: dict) -> None:
    """A stderr warning when the int8 model's bit agreement is below the minimum."""
    int8 = report.get("int8")
    if not int8 or not report["int8_flagged"]:
        return
    action = (
        "written anyway (--keep-flagged-int8); prefer the float models"
        if report["int8_written"]
        else f"{int8['file']} was not written (--keep-flagged-int8 writes it)"
    )
    print(
        f"warning: int8 bit agreement {100 * int8['bit_agreement']:.2f}% is below "
        f"{100 * int8['min_agreement']:.0f}%; {action} "
        '(parity.json: "int8_flagged": true)',
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
