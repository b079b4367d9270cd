"""Trains Y-Net on a dataset folder and evaluates it on the test split.

Usage:
    python -m keras_ynet.train                      # built-in phantoms, a few minutes
    python -m keras_ynet.train --data ../shared/data/rimone_dl --out runs/rimone

Writes RUN_DIR/model.keras, run_config.json (settings + the data trained on),
history.csv (every loss term and coupling weight per epoch), training_curves.png (loss
terms and validation mAP@10 per epoch), tensorboard/ (``tensorboard --logdir RUN_DIR``),
metrics.json (test-split retrieval) and train_info.json (timing, best epoch, bit
balance). While it trains, RUN_DIR/backup/ holds the last finished epoch: rerunning the
same command after an interruption continues from there.

Several devices: ``--distribute mirrored`` (every GPU of this host) or ``--distribute
multiworker`` with TF_CONFIG on every host (docs/distributed_training.md).

Just over 300 lines on purpose: the order of a run (check the data, place it on the
devices, lock the folder, resume, fit, restore the best epoch, calibrate, evaluate,
write) is read top to bottom in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from deploy.atomic import atomic_write_text
from deploy.locking import writer_lock
from keras_ynet.cli_json import add_json_flag, run_with_result
from keras_ynet.run_config import (
    RunConfig,
    add_run_arguments,
    check_run_settings,
    config_from_args,
)


def dataset_fingerprint(root: Path) -> str:
    """sha256 of labels.csv: names the exact table a model was trained on."""
    return hashlib.sha256((Path(root) / "labels.csv").read_bytes()).hexdigest()


def build_model(config: RunConfig, spec, image_size: int, seg_guidance: str | None = None):
    """The YNet of ``config``; ``seg_guidance`` is ``config.seg_guidance`` resolved to
    ``on``/``off`` (:func:`keras_ynet.mask_signal.decide_seg_guidance`)."""
    from keras_ynet.model import YNet

    seg_guidance = seg_guidance or config.seg_guidance
    if seg_guidance not in ("on", "off"):
        raise ValueError(f"resolve --seg-guidance {seg_guidance!r} to on or off first")
    return YNet(
        input_shape=(image_size, image_size, spec.channels),
        num_classes=spec.num_classes,
        num_mask_classes=spec.num_mask_classes,
        bits=config.bits,
        variant=config.variant,
        hash_head=config.hash_head,
        coupling=config.coupling,
        coupling_weights=config.coupling_weights,
        seg_trains_encoder=seg_guidance == "on",
        stem_filters=config.stem_filters,
        stage_widths=config.stage_widths,
        stage_blocks=config.stage_blocks,
        stem_stride=config.stem_stride,
        backbone=config.backbone,
        rmac_channels=config.rmac_channels,
        label_smoothing=config.label_smoothing,
        circle_gamma=config.circle_gamma,
        circle_margin=config.circle_margin,
        class_names=spec.class_names,
        mask_class_names=spec.mask_class_names,
        seed=config.seed,
    )


def resume_epoch(backup: Path) -> int:
    """Epochs an interrupted run in ``backup`` finished (0: none to resume).

    Reads the record keras.callbacks.BackupAndRestore keeps beside its weights, so the
    batches can be skipped to where the interrupted run stopped before fit() starts.
    """
    path = Path(backup) / "training_metadata.json"
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: damaged resume record ({e}); delete {backup}") from None


def check_resumable(config: RunConfig, backup: Path) -> None:
    """Refuses to resume an interrupted run that had other settings (its weights would
    not fit, or would silently train on); ``distribute`` may differ."""
    path = Path(backup) / "run_config.json"
    wanted = {**dataclasses.asdict(config), "distribute": None}
    if path.is_file() and resume_epoch(backup) > 0:
        stored = {**dataclasses.asdict(RunConfig.load(path)), "distribute": None}
        changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
        if changed:
            raise ValueError(
                f"{backup} holds an interrupted run with other settings ({', '.join(changed)}); "
                f"rerun it with its settings (see {path}) or delete {backup} to start afresh"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, config.to_json())


def train(config: RunConfig, verbose: int = 2, callbacks=()) -> dict:
    """Runs one training run as described by ``config``; returns a summary dict.

    The dataset is validated before TensorFlow is imported, so a broken folder fails in
    a second, naming every bad row (:class:`keras_ynet.dataset.DatasetError`).

    An interrupted run resumes: the run folder keeps the last finished epoch's weights
    and optimiser state (``backup/``, keras.callbacks.BackupAndRestore), and training the
    same settings into the same folder continues from there, on the batches the
    interrupted run would have seen next. ``callbacks`` are added after the run's own
    (which they see the logs of).
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

    from keras_ynet.distribute import make_placement

    placement = make_placement(config.distribute)  # before any other TensorFlow work
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # One process at a time trains into a run folder (a second one fails at once,
    # naming the first): two would overwrite each other's resume state.
    with writer_lock(placement.backup_dir(out), timeout=0):
        return _fit_and_write(config, spec, data_dir, placement, verbose, callbacks)


def _fit_and_write(config, spec, data_dir, placement, verbose, callbacks) -> dict:
    """The body of :func:`train` once the data is checked and the run folder locked."""
    import keras
    import tensorflow as tf

    from keras_ynet.callbacks import VAL_KEY, BestValidation, RunProgress, ynet_validation_score
    from keras_ynet.dataset_evaluation import evaluate_model
    from keras_ynet.history import tidy_history
    from keras_ynet.mask_signal import decide_seg_guidance, guidance_line
    from keras_ynet.pipeline import load_arrays, make_dataset
    from keras_ynet.plots import CURVES_FILE, plot_training_curves
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
    backup = placement.backup_dir(out)
    check_resumable(config, backup)
    start_epoch = resume_epoch(backup)
    writes = placement.is_chief  # other workers of a multi-worker run write only backup-*

    data = prepare_training_data(spec, config)
    fit_records, val_records, batch = data.fit_records, data.val_records, data.batch_size
    val_ds = make_dataset(spec, val_records, size, spec.channels, batch, False, False, config.seed)
    steps = data.steps
    config = dataclasses.replace(config, epochs=resolve_epochs(config, steps))
    # One endless stream of the epochs' batches (reshuffled each pass, as fit() would):
    # a resumed run skips the epochs it already trained, so it meets the same batches.
    fit_ds = data.dataset.repeat().skip(start_epoch * steps)
    if placement.mode == "multiworker":  # in-memory data has no files to shard by: elements
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        fit_ds, val_ds = fit_ds.with_options(options), val_ds.with_options(options)
    # Measured on the fit records before the model is built: auto decides the graph.
    seg_guidance, signal = decide_seg_guidance(spec, config)
    with placement.strategy.scope():
        model = build_model(config, spec, size, seg_guidance)
        compile_adamw_cosine(model, config, steps, config.epochs)

    checkpoint = BestValidation(
        ynet_validation_score(data.fit_images, data.fit_labels, data.val_images, data.val_labels),
        state_dir=backup,
    )
    progress = RunProgress(config.epochs, steps * batch)
    fit_callbacks = [checkpoint, progress]
    if writes:
        fit_callbacks += [
            # append: a resumed run continues the file (tidy_history drops repeated epochs)
            keras.callbacks.CSVLogger(str(out / "history.csv"), append=start_epoch > 0),
            keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard"), write_graph=False),
        ]
    # Last of the run's own: an epoch is backed up once everything above has logged it.
    fit_callbacks.append(keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True))
    print(
        f"training {config.variant} ({model.count_params():,} parameters, {config.bits} bits) on "
        f"{spec.name}: {len(fit_records)} train / {len(val_records)} validation images at "
        f"{size}px, {config.epochs} epochs, {placement.replicas} replica(s) "
        f"({config.distribute}{'' if writes else ', ' + placement.task})",
        flush=True,
    )
    if config.variant != "no_fpn":
        if signal is not None:
            print(signal.summary(), flush=True)
        seg_weighted_out = config.coupling == "fixed" and config.coupling_weights[1] == 0
        if not seg_weighted_out:
            print(guidance_line(config.seg_guidance, seg_guidance, signal), flush=True)
    if start_epoch:
        print(f"resuming at epoch {start_epoch + 1} from {backup}", flush=True)
    started = time.perf_counter()
    model.fit(
        fit_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=[*fit_callbacks, *callbacks],
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - started

    # Bits are centred on the whole train split (the retrieval database).
    train_images, _ = load_arrays(spec.split("train"), size, spec.channels)
    calibrate_bit_thresholds(model, train_images)
    ones = encode_bits(model, train_images).mean(axis=0)
    report = evaluate_model(model, spec)  # every worker: prediction is collective
    summary = {"out": str(out), "report": report, "model": model, "info": None, "files": []}
    if not writes:
        return summary
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
    atomic_write_text(out / "run_config.json", json.dumps(run_record, indent=2))
    atomic_write_text(out / "metrics.json", json.dumps(report.to_dict(), indent=2))
    epochs_run = tidy_history(out / "history.csv")
    plot_training_curves(out / "history.csv", out / CURVES_FILE, f"{spec.name}: {out.name}")
    info = {
        "train_seconds": round(train_seconds, 1),
        "images_per_second": round(progress.images_per_second, 2),
        "epochs_run": epochs_run,
        "resumed_at_epoch": start_epoch + 1 if start_epoch else None,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "replicas": placement.replicas,
        "best_epoch": checkpoint.best_epoch + 1,
        f"best_{VAL_KEY}": checkpoint.best,
        "bit_balance_min": float(ones.min()),
        "bit_balance_max": float(ones.max()),
        "parameters": model.count_params(),
        "mask_signal": signal.as_dict() if signal is not None else None,
        "seg_guidance": seg_guidance,
    }
    atomic_write_text(out / "train_info.json", json.dumps(info, indent=2))
    print(f"\n# Test-split retrieval on {spec.name} ({config.bits} bits)\n")
    print(report.to_markdown())
    files = ["model.keras", "run_config.json", "history.csv", CURVES_FILE, "metrics.json",
             "train_info.json", "tensorboard/"]  # fmt: skip
    print(f"wrote {out}/{', '.join(files)}")
    summary["info"] = info
    summary["files"] = [str(out / name) for name in files]
    return summary


def parse_args(argv=None) -> tuple[RunConfig, argparse.Namespace]:
    """The run settings and the command's own flags (``--debug``, ``--json``); bad
    values exit with a usage error (status 2).

    Every other flag comes from :class:`RunConfig`
    (:func:`keras_ynet.run_config.add_run_arguments`).
    """
    p = argparse.ArgumentParser(
        prog="python -m keras_ynet.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_flag(p)
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
    return config, a


PHANTOM_EPOCHS = 15


def main(argv: list[str] | None = None) -> int:
    """Trains; returns 0, or 1 after one ``error: ...`` line (``--debug``: the traceback)."""
    config, flags = parse_args(argv)

    def work():
        summary = train(config, verbose=1 if sys.stdout.isatty() else 2)
        return 0, {
            "out": summary["out"],
            "files": summary["files"],
            "train_info": summary["info"],
            "metrics": summary["report"].to_dict(),
        }

    return run_with_result(work, flags.json, flags.debug)


if __name__ == "__main__":
    raise SystemExit(main())
