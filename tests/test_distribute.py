"""Training on several devices (--distribute): settings, the per-replica loss scaling of
YNet.train_step, a mirrored run on two logical CPU devices, and the multi-worker run
that Keras 3 cannot do yet (docs/distributed_training.md).

A process can split its CPU into logical devices only before TensorFlow initialises,
so every run on two devices is a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from keras_ynet.distribute import Placement, read_tf_config, task_name
from keras_ynet.phantoms import make_phantoms
from keras_ynet.train import parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: two logical CPU devices, then the code that follows.
TWO_CPUS = """
import sys
import tensorflow as tf
from keras_ynet.distribute import use_logical_cpus
use_logical_cpus(2)
"""
TRAIN_MAIN = "from keras_ynet.train import main\nraise SystemExit(main(sys.argv[1:]))\n"

# One optimiser step (SGD) on a batch whose two halves are the same 4 images: each of two
# replicas gets one half. Every loss term of this variant is a mean over the images (or
# pixels), and batch-norm statistics of [A, A] equal those of A, so the gradient of the
# global batch equals each replica's gradient; the step matches one device's only if the
# replicas' gradients are averaged (each loss divided by 2 before the optimiser sums them).
ONE_STEP = """
import json
import keras
import numpy as np
from keras_ynet.model import YNet

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (4, 64, 64, 1)).astype("float32")
labels = np.array([0, 1, 0, 1], "int32")
masks = rng.integers(0, 3, (4, 64, 64)).astype("int32")
twice = lambda a: np.concatenate([a, a])
batch = (twice(images), {"label": twice(labels), "mask": twice(masks)})
tiny = dict(input_shape=(64, 64, 1), num_classes=2, num_mask_classes=3, stem_filters=4,
            stage_widths=(4, 4, 4, 16), stage_blocks=(1, 1, 1, 1), fpn_channels=8,
            rmac_channels=16, bits=64, variant="no_circle", hash_head="guided")

def step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = YNet(**tiny)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    before = model.get_weights()
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    return before, model.get_weights(), {k: v[0] for k, v in logs.items()}

start, one, one_logs = step(tf.distribute.get_strategy())
_, two, two_logs = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({
    "moved": max(float(np.abs(a - b).max()) for a, b in zip(one, start)),
    "differ": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
    "one_logs": one_logs, "two_logs": two_logs,
}))
"""

TINY_FLAGS = [
    "--epochs", "3", "--image-size", "64", "--batch-size", "8", "--stem-filters", "4",
    "--stage-widths", "4", "8", "8", "64", "--stage-blocks", "1", "1", "1", "1",
    "--learning-rate", "3e-3",
]  # fmt: skip


def python(code: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=environ, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def test_the_distribute_flag_takes_the_modes_and_defaults_to_one_device(capsys):
    assert parse_args(["--out", "x"])[0].distribute == "none"
    assert parse_args(["--out", "x", "--distribute", "mirrored"])[0].distribute == "mirrored"
    with pytest.raises(SystemExit) as e:
        parse_args(["--out", "x", "--distribute", "tpu"])
    assert e.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err


CLUSTER = {"worker": ["localhost:2222", "localhost:2223"]}


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "--distribute multiworker needs TF_CONFIG"),
        ("{cluster", "TF_CONFIG is not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), 'TF_CONFIG: "cluster" must list "worker"'),
        (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}),
         'TF_CONFIG: cluster "worker" must be a list of "host:port"'),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "ps", "index": 0}}),
         'TF_CONFIG: "task.type" must be one of'),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 2}}),
         'TF_CONFIG: "task.index" must be in 0..1, got 2'),
    ],
)  # fmt: skip
def test_a_bad_tf_config_is_named_before_tensorflow_starts(tf_config, message):
    environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        read_tf_config(environ)


@pytest.mark.parametrize(
    ("cluster", "task", "name"),
    [
        (CLUSTER, {"type": "worker", "index": 0}, "chief"),
        (CLUSTER, {"type": "worker", "index": 1}, "worker-1"),
        ({**CLUSTER, "chief": ["localhost:2224"]}, {"type": "chief", "index": 0}, "chief"),
        ({**CLUSTER, "chief": ["localhost:2224"]}, {"type": "worker", "index": 0}, "worker-0"),
    ],
)
def test_the_chief_is_the_one_process_that_writes_the_run(cluster, task, name, tmp_path):
    config = read_tf_config({"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
    assert task_name(config) == name
    placement = Placement(strategy=None, mode="multiworker", task=name)
    expected = "backup" if name == "chief" else f"backup-{name}"
    assert placement.backup_dir(tmp_path) == tmp_path / expected


@pytest.mark.slow  # a subprocess that trains two single steps
def test_a_mirrored_step_is_the_one_device_step_on_the_global_batch():
    done = python(TWO_CPUS + ONE_STEP)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The step moves weights by up to ~0.9; a missing 1/replicas would double it (the
    # weights would differ by as much); float32 summation order differs by ~1e-5.
    assert result["moved"] > 0.5
    assert result["differ"] < 1e-4
    for key, value in result["one_logs"].items():  # logged terms: the global-batch means
        assert result["two_logs"][key] == pytest.approx(value, rel=1e-5), key


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute") / "phantoms"
    make_phantoms(root, n_per_class=12, image_size=64, seed=0)
    return root


def read_run(out):
    info = json.loads((out / "train_info.json").read_text())
    with open(out / "history.csv") as f:
        header, *rows = [line.strip().split(",") for line in f]
    return info, [dict(zip(header, row, strict=True)) for row in rows]


@pytest.mark.slow  # two short trainings in subprocesses
def test_a_mirrored_run_on_two_devices_trains_like_one_device(phantoms, tmp_path):
    runs = {}
    for mode in ("none", "mirrored"):
        out = tmp_path / mode
        args = ["--data", str(phantoms), "--out", str(out), "--distribute", mode]
        done = python(TWO_CPUS + TRAIN_MAIN, *args, "--preset", "ce_guided", *TINY_FLAGS)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[mode] = read_run(out)
    (one, one_rows), (two, two_rows) = runs["none"], runs["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["epochs_run"] == two["epochs_run"] == 3
    assert one["optimizer_steps"] == two["optimizer_steps"] == 3 * (20 // 8)
    # ce_guided: every loss term is a mean over images or pixels, so what differs is
    # batch normalisation (each replica uses its own 4 images' statistics). Measured
    # (docs/results.md): the epoch losses differ by 3.7%, 0.9%, 1.2%; seed 1 against
    # seed 0 on one device: 32%, 13%, 0.7%. A replica's loss logged alone, or summed
    # over the replicas, would be off by far more than 5%.
    for one_row, two_row in zip(one_rows, two_rows, strict=True):
        assert float(two_row["loss"]) == pytest.approx(float(one_row["loss"]), rel=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class MultiWorkerFitFails(AssertionError):
    """The upstream failure of Keras 3 fit() under MultiWorkerMirroredStrategy."""


# The last frame of the upstream failure, as run_command's `error:` line starts.
UPSTREAM_ERROR = "error: Attempt to convert a value (PerReplica:"


@pytest.mark.slow  # two worker processes
@pytest.mark.xfail(
    strict=True,
    raises=MultiWorkerFitFails,
    reason="Keras 3.15 fit() under MultiWorkerMirroredStrategy reduces its first batch "
    "with strategy.reduce in _maybe_symbolic_build and fails: 'Attempt to convert a value "
    "(PerReplica:...) to a Tensor' (keras-team/keras#20585, tensorflow/tensorflow#72388)",
)
def test_two_workers_on_localhost_train_one_run(phantoms, tmp_path):
    out = tmp_path / "run"
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    args = ["--data", str(phantoms), "--out", str(out), "--distribute", "multiworker", *TINY_FLAGS]
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "keras_ynet.train", *args],
                cwd=REPO,
                env=environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    results = [w.communicate(timeout=300) for w in workers]
    codes = [w.returncode for w in workers]
    if codes == [1, 1] and all(UPSTREAM_ERROR in err for _, err in results):
        # Both workers joined the cluster (2 replicas) and failed in fit(): the known
        # failure, and nothing else, is what this test expects until Keras fixes it.
        assert all("2 replica(s) (multiworker" in out_ for out_, _ in results)
        raise MultiWorkerFitFails(UPSTREAM_ERROR)
    errors = [err.strip().splitlines()[-1:] for _, err in results]
    assert codes == [0, 0], errors
    info, _ = read_run(out)
    assert (info["replicas"], info["epochs_run"]) == (2, 3)
    assert not (out / "backup-worker-1").exists()  # the worker kept only its resume state
