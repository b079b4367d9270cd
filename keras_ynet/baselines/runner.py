"""One entry point for every baseline: train (or reuse) and evaluate on the test split."""

from __future__ import annotations

from pathlib import Path

from keras_ynet.baselines import AGGREGATION_METHODS, BASELINES, HASHING_METHODS
from keras_ynet.dataset import DatasetSpec


def run_baseline(
    method: str,
    spec: DatasetSpec,
    config,
    out: str | Path,
    classifier_dir: str | Path | None = None,
    verbose: int = 0,
) -> dict:
    """Trains and evaluates one baseline with the shared run settings.

    Args:
        method: one of :data:`keras_ynet.baselines.BASELINES`.
        spec: the dataset (queries = its test split, database = its train split).
        config: a :class:`keras_ynet.run_config.RunConfig`; the encoder widths, image
            size, epochs, batch size, optimiser, validation fraction, augmentation,
            seed and ``bits`` (hashing) are read from it.
        out: folder for this run's history and weights.
        classifier_dir: where the classification-trained encoder of the aggregation
            methods is saved, shared by all of them (default: ``out/classifier``).
        verbose: Keras fit verbosity.

    Returns:
        dict with ``report`` (a RetrievalReport), ``info`` (training facts) and
        ``descriptor`` (``{"kind": "float" | "hash", "dim": ...}``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if method in HASHING_METHODS:
        from keras_ynet.baselines.hashing import run_hashing

        return run_hashing(method, spec, config, out, verbose)
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")

    from keras_ynet.baselines import classification
    from keras_ynet.dataset_evaluation import evaluate_records_ranking

    classifier_dir = Path(classifier_dir) if classifier_dir else out / "classifier"
    classifier_dir.mkdir(parents=True, exist_ok=True)
    network, classifier_info = classification.train_or_load_classifier(
        spec, config, classifier_dir, verbose
    )
    queries, database = classification.split_outputs(network, spec, config)
    info = {"classifier": classifier_info}
    if method == "regional_attention":
        from keras_ynet.baselines.regional_attention import rank_regional_attention
        from keras_ynet.training_data import prepare_training_data

        data = prepare_training_data(spec, config)
        ranking, info["attention"] = rank_regional_attention(
            network, data, queries, database, config, out, verbose
        )
    else:
        ranking = classification.rank(
            method, queries, database, classification.classifier_kernel(network)
        )
    report = evaluate_records_ranking(spec, spec.split("test"), spec.split("train"), ranking)
    dim = int(queries.features.shape[-1])
    return {"report": report, "info": info, "descriptor": {"kind": "float", "dim": dim}}
