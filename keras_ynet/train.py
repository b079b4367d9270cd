"""Trains Y-Net on a dataset folder and evaluates it on the test split.

Usage:
    python -m keras_ynet.train                      # built-in phantoms, a few minutes
    python -m keras_ynet.train --data ../shared/data/rimone_dl --out runs/rimone

Writes RUN_DIR/model.keras, run_config.json (settings + the data trained on),
history.csv (every loss term and coupling weight per epoch), metrics.json (test-split
retrieval) and train_info.json (timing, best epoch, bit balance).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from deploy.errors import run_command
from keras_ynet.run_config import (
    RunConfig,
    add_run_arguments,
    check_run_settings,
    config_from_args,
)


def dataset_fingerprint(root: Path) -> str:
    """sha256 of labels.csv: names the exact table a model was trained on."""
    return hashlib.sha256((Path(root) / "labels.csv").read_bytes()).hexdigest()


def build_model(config: RunConfig, spec, image_size: int):
    from keras_ynet.model import YNet

    return YNet(
        input_shape=(image_size, image_size, spec.channels),
        num_classes=spec.num_classes,
        num_mask_classes=spec.num_mask_classes,
        bits=config.bits,
        variant=config.variant,
        hash_head=config.hash_head,
        coupling=config.coupling,
        coupling_weights=config.coupling_weights,
        stem_filters=config.stem_filters,
        stage_widths=config.stage_widths,
        stage_blocks=config.stage_blocks,
        class_names=spec.class_names,
        mask_class_names=spec.mask_class_names,
        seed=config.seed,
    )


def train(config: RunConfig, verbose: int = 2) -> dict:
    """Runs one training run as described by ``config``; returns a summary dict.

    The dataset is validated before TensorFlow is imported, so a broken folder fails in
    a second, naming every bad row (:class:`keras_ynet.dataset.DatasetError`).
    """
    from keras_ynet.dataset import load_dataset
    from keras_ynet.phantoms import default_phantom_dir

    data_dir = Path(config.data) if config.data else default_phantom_dir(kind="fundus")
    spec = load_dataset(data_dir)
    if not any(r.mask is not None for r in spec.split("train")) and config.variant != "no_fpn":
        raise ValueError(
            f"{Path(data_dir) / 'labels.csv'}: no train row has a mask, so the segmentation "
            "branch has nothing to learn; add masks or train with --variant no_fpn"
        )

    import keras

    from keras_ynet.callbacks import VAL_KEY, BestValidation, RunProgress, ynet_validation_score
    from keras_ynet.dataset_evaluation import evaluate_model
    from keras_ynet.pipeline import load_arrays, make_dataset
    from keras_ynet.saving import save_ynet
    from keras_ynet.training_data import (
        compile_adamw_cosine,
        prepare_training_data,
        resolve_epochs,
    )
    from keras_ynet.ynet_codes import calibrate_bit_thresholds, encode_bits

    keras.utils.set_random_seed(config.seed)
    size = config.image_size
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    data = prepare_training_data(spec, config)
    fit_records, val_records, batch = data.fit_records, data.val_records, data.batch_size
    val_ds = make_dataset(spec, val_records, size, spec.channels, batch, False, False, config.seed)
    model = build_model(config, spec, size)
    steps = data.steps
    config = dataclasses.replace(config, epochs=resolve_epochs(config, steps))
    compile_adamw_cosine(model, config, steps, config.epochs)

    checkpoint = BestValidation(
        ynet_validation_score(data.fit_images, data.fit_labels, data.val_images, data.val_labels)
    )
    progress = RunProgress(config.epochs, steps * batch)
    print(
        f"training {config.variant} ({model.count_params():,} parameters, {config.bits} bits) on "
        f"{spec.name}: {len(fit_records)} train / {len(val_records)} validation images at "
        f"{size}px, {config.epochs} epochs",
        flush=True,
    )
    started = time.perf_counter()
    history = model.fit(
        data.dataset,
        validation_data=val_ds,
        epochs=config.epochs,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=[checkpoint, progress, keras.callbacks.CSVLogger(str(out / "history.csv"))],
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - started

    # Bits are centred on the whole train split (the retrieval database).
    train_images, _ = load_arrays(spec.split("train"), size, spec.channels)
    calibrate_bit_thresholds(model, train_images)
    ones = encode_bits(model, train_images).mean(axis=0)
    save_ynet(model, out / "model.keras")

    run_record = {
        **dataclasses.asdict(config),
        "data": str(data_dir),
        "dataset": {
            "name": spec.name,
            "licence": spec.licence,
            "root": str(Path(data_dir).resolve()),
            "labels_sha256": dataset_fingerprint(data_dir),
            "class_names": spec.class_names,
            "mask_class_names": spec.mask_class_names,
            "n_train": len(fit_records),
            "n_validation": len(val_records),
            "n_test": len(spec.split("test")),
        },
    }
    (out / "run_config.json").write_text(json.dumps(run_record, indent=2))
    report = evaluate_model(model, spec)
    (out / "metrics.json").write_text(json.dumps(report.to_dict(), indent=2))
    info = {
        "train_seconds": round(train_seconds, 1),
        "images_per_second": round(progress.images_per_second, 2),
        "epochs_run": len(history.history.get("loss", [])),
        "best_epoch": checkpoint.best_epoch + 1,
        f"best_{VAL_KEY}": checkpoint.best,
        "bit_balance_min": float(ones.min()),
        "bit_balance_max": float(ones.max()),
        "parameters": model.count_params(),
    }
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    print(f"\n# Test-split retrieval on {spec.name} ({config.bits} bits)\n")
    print(report.to_markdown())
    print(f"wrote {out}/model.keras, run_config.json, history.csv, metrics.json, train_info.json")
    return {"out": str(out), "report": report, "info": info, "model": model}


def parse_args(argv=None) -> tuple[RunConfig, bool]:
    """The run settings and ``--debug``; bad values exit with a usage error (status 2).

    Every flag but ``--debug`` comes from :class:`RunConfig`
    (:func:`keras_ynet.run_config.add_run_arguments`).
    """
    p = argparse.ArgumentParser(
        prog="python -m keras_ynet.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    phantoms = a.data is None
    name = "phantoms" if phantoms else Path(a.data).name
    config = config_from_args(
        a,
        out=f"runs/{name}-{a.variant or RunConfig.variant}",
        epochs=PHANTOM_EPOCHS if phantoms else None,
    )
    for problem in check_run_settings(config):
        p.error(problem)
    return config, a.debug


PHANTOM_EPOCHS = 15


def main(argv: list[str] | None = None) -> int:
    """Trains; returns 0, or 1 after one ``error: ...`` line (``--debug``: the traceback)."""
    config, debug = parse_args(argv)

    def work():
        train(config, verbose=1 if sys.stdout.isatty() else 2)

    return run_command(work, debug)


if __name__ == "__main__":
    raise SystemExit(main())
