"""Stored experiment runs: one folder per (method, seed, settings), trained at most once.

A run's folder is OUT/runs/<method>-s<seed>-<key>, where the key hashes the method, every
run setting except paths, the sha256 of the dataset's labels.csv and :data:`VERSION`.
Its ``result.json`` (written atomically, last) holds the test-split report; a folder
without it is an unfinished run and is trained again. Runs of different table rows
with identical settings (Table III's ``ynet`` and ``bits64``) share one folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path

from deploy.atomic import atomic_write_text
from keras_ynet.run_config import RunConfig

VERSION = 1  # bump when a change to training or evaluation makes stored runs stale


@dataclasses.dataclass
class Run:
    """One (method, seed, settings) training run and where its result is stored."""

    row: str
    method: str  # "ynet" or a baseline
    config: RunConfig
    key: str
    folder: Path

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"

    def cached(self) -> dict | None:
        if not self.result_path.is_file():
            return None
        result = json.loads(self.result_path.read_text())
        return result if result.get("key") == self.key else None


# The run settings the plain_cnn row reads (keras_ynet.baselines.plain_cnn): the encoder,
# guidance and augmentation settings of Y-Net do not reach it.
PLAIN_CNN_SETTINGS = (
    "epochs", "train_steps", "batch_size", "image_size", "bits", "learning_rate",
    "weight_decay", "val_fraction", "seed",
)  # fmt: skip


def settings_key(method: str, config: RunConfig, dataset_sha: str) -> str:
    """12 hex digits naming a run: method, every setting but paths, data, code version."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out", "data")}
    # Settings added later drop out at their old value, so stored runs keep their keys.
    added = (
        ("distribute", "none"), ("stem_stride", 4), ("label_smoothing", 0.0),
        ("backbone", "resnet"), ("flip", False), ("rmac_channels", 512), ("seg_guidance", "on"),
        ("circle_gamma", 32.0), ("circle_margin", 0.25), ("balanced_batches", False),
    )  # fmt: skip
    for name, old in added:
        if settings.get(name) == old:
            del settings[name]
    if method not in YNET_METHODS:  # the segmentation guidance is Y-Net's alone
        settings.pop("seg_guidance", None)
    if method == "plain_cnn":  # its own network and recipe: only these settings reach it
        settings = {k: v for k, v in settings.items() if k in PLAIN_CNN_SETTINGS}
    payload = {"version": VERSION, "method": method, "settings": settings, "data": dataset_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# Methods that train (or read) a Y-Net of the run settings.
YNET_METHODS = ("ynet", "ynet_embedding")


@functools.lru_cache(maxsize=64)
def _resolved_seg_guidance(data: str, dataset_sha: str, variant: str, val_fraction: float,
                           seed: int) -> str:  # fmt: skip
    from keras_ynet.dataset import load_dataset
    from keras_ynet.mask_signal import decide_seg_guidance

    config = RunConfig(data=data, variant=variant, val_fraction=val_fraction, seed=seed,
                       seg_guidance="auto")  # fmt: skip
    return decide_seg_guidance(load_dataset(data), config)[0]


def plan_run(row: str, method: str, config: RunConfig, out: Path, dataset_sha: str) -> Run:
    """The stored run of ``method`` with ``config`` on the dataset ``dataset_sha``.

    ``--seg-guidance auto`` is resolved here, from the train split's masks as training
    would (:func:`keras_ynet.mask_signal.decide_seg_guidance`): a run keys on what it
    trains, so an ``auto`` that comes out ``on`` reuses the stored ``on`` runs.
    """
    if method in YNET_METHODS and config.seg_guidance == "auto":
        guidance = _resolved_seg_guidance(
            config.data, dataset_sha, config.variant, config.val_fraction, config.seed
        )
        config = dataclasses.replace(config, seg_guidance=guidance)
    key = settings_key(method, config, dataset_sha)
    return Run(row, method, config, key, out / "runs" / f"{method}-s{config.seed}-{key}")


def _train_and_evaluate(run: Run, dataset_sha: str, out: Path) -> dict:
    """Trains and evaluates one run (Y-Net through keras_ynet.train, else a baseline)."""
    from keras_ynet.dataset import load_dataset

    config = dataclasses.replace(run.config, out=str(run.folder))
    if run.method == "ynet_embedding":
        return _evaluate_ynet_embedding(config, out, dataset_sha)
    if run.method == "plain_cnn":
        from keras_ynet.baselines.plain_cnn import run_plain_cnn

        return run_plain_cnn(load_dataset(config.data), config, run.folder)
    if run.method in ("classifier", "classifier_float"):
        from keras_ynet.baselines import classifier_codes

        spec = load_dataset(config.data)
        if run.method == "classifier":
            return classifier_codes.run_classifier(spec, config, run.folder)
        source = plan_run("classifier", "classifier", config, out, dataset_sha)
        if source.cached() is None:
            raise RuntimeError(
                f"classifier_float needs the finished classifier run {source.folder}"
            )
        return classifier_codes.evaluate_classifier_float(spec, config, source.folder)
    if run.method == "ynet":
        from keras_ynet.train import train

        result = train(config, verbose=0)
        descriptor = {"kind": "hash", "dim": config.bits}
        return {"report": result["report"], "info": result["info"], "descriptor": descriptor}
    from keras_ynet.baselines.runner import run_baseline

    spec = load_dataset(config.data)
    # The aggregation rows share one classification-trained encoder per seed and settings.
    shared = plan_run("encoder", "aggregation_encoder", config, out, dataset_sha).folder
    return run_baseline(run.method, spec, config, run.folder, classifier_dir=shared)


def _evaluate_ynet_embedding(config: RunConfig, out: Path, dataset_sha: str) -> dict:
    """Y-Net's float R-MAC embedding ranked by cosine: the same trained model as the
    ``ynet`` run of these settings (not trained again), so it separates what the network
    learned from what 64-bit hashing keeps of it. The ``ynet`` run must be stored first."""
    import keras

    from keras_ynet.dataset import load_dataset
    from keras_ynet.dataset_evaluation import evaluate_descriptors
    from keras_ynet.pipeline import load_arrays
    from keras_ynet.saving import load_ynet

    source = plan_run("ynet", "ynet", dataclasses.replace(config, out=""), out, dataset_sha)
    if source.cached() is None:
        raise RuntimeError(f"ynet_embedding needs the finished ynet run {source.folder}")
    model = load_ynet(source.folder / "model.keras")
    embedder = keras.Model(model.input, model.get_layer("embedding").output)
    spec = load_dataset(config.data)
    queries, database = spec.split("test"), spec.split("train")
    size, channels = model.input_shape[1], model.input_shape[3]

    def embed(records):
        images, _ = load_arrays(records, size, channels)
        return embedder.predict(images.astype("float32"), batch_size=config.batch_size, verbose=0)

    q, d = embed(queries), embed(database)
    report = evaluate_descriptors(spec, queries, q, database, d)
    info = {"source_run": source.folder.name}
    descriptor = {"kind": "float", "dim": int(q.shape[1])}
    return {"report": report, "info": info, "descriptor": descriptor}


def execute(
    runs: list[Run], shas: dict[str, str], out: Path, debug: bool = False, train: bool = True
):
    """Runs what is not stored yet, with a progress line and ETA; returns (results, failed).

    Args:
        runs: planned runs; runs sharing a key are trained once.
        shas: dataset folder -> labels.csv sha256 (keys the runs).
        out: experiment folder.
        debug: re-raise a failing run instead of reporting it and going on.
        train: False reports the stored runs only; the others stay None in ``results``.
    """
    rows_of: dict[str, list[str]] = {}
    first: dict[str, Run] = {}
    for r in runs:
        rows_of.setdefault(r.key, []).append(r.row)
        first.setdefault(r.key, r)
    unique = list(first.values())
    results = {r.key: r.cached() for r in unique}
    todo = [r for r in unique if results[r.key] is None]
    print(f"{len(unique)} runs: {len(unique) - len(todo)} stored, {len(todo)} to train", flush=True)
    if not train:
        for run in todo:
            print(f"not stored, skipped (--report-only): {' = '.join(rows_of[run.key])} "
                  f"(seed {run.config.seed})", flush=True)  # fmt: skip
        return results, []
    failed, seconds = [], {}  # seconds: method -> durations of its finished runs
    for i, run in enumerate(unique, 1):
        tag = f"[{i}/{len(unique)}] {' = '.join(rows_of[run.key])} (seed {run.config.seed})"
        if results[run.key] is not None:
            print(f"{tag}: cached in {run.folder.name}", flush=True)
            continue
        print(f"{tag}: training -> {run.folder}", flush=True)
        started = time.perf_counter()
        try:
            result = _train_and_evaluate(run, shas[run.config.data], out)
        except Exception as e:  # one broken method must not lose a night of other runs
            if debug:
                raise
            failed.append(run)
            print(f"{tag}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            traceback.print_exc(limit=3)
            continue
        took = time.perf_counter() - started
        seconds.setdefault(run.method, []).append(took)
        results[run.key] = _store(run, result, shas[run.config.data], took)
        left = todo[todo.index(run) + 1 :]
        print(
            f"{tag}: done in {took / 60:.1f} min, mAP@10 (c) "
            f"{result['report'].map['k'][10]:.4f}; ETA {eta_minutes(left, seconds):.1f} min "
            f"for {len(left)} more runs",
            flush=True,
        )
    return results, failed


def eta_minutes(left: list[Run], seconds: dict[str, list[float]]) -> float:
    """Minutes the runs ``left`` should take: each at its method's mean so far, or at
    the mean of every finished run for a method not seen yet."""
    every = [t for times in seconds.values() for t in times]
    if not every:
        return float("nan")
    overall = sum(every) / len(every)
    per_method = {m: sum(t) / len(t) for m, t in seconds.items()}
    return sum(per_method.get(r.method, overall) for r in left) / 60


def _store(run: Run, result: dict, dataset_sha: str, seconds: float) -> dict:
    record = {
        "key": run.key,
        "method": run.method,
        "seed": run.config.seed,
        "folder": run.folder.name,
        "settings": {**dataclasses.asdict(run.config), "out": str(run.folder)},
        "labels_sha256": dataset_sha,
        "descriptor": result["descriptor"],
        "report": result["report"].to_dict(),
        "info": result["info"],
        "seconds": round(seconds, 1),
    }
    run.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.result_path, json.dumps(record, indent=2, default=float) + "\n")
    return record
