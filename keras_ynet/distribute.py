"""Which devices a training run uses: the tf.distribute strategy of ``--distribute``.

``none``: TensorFlow's default strategy (one device). ``mirrored``: MirroredStrategy over
every GPU of this host, or, on a host without GPUs, over every logical CPU device (one,
unless the process split the CPU with ``tf.config.set_logical_device_configuration``,
which is how the tests run two replicas without a GPU). ``multiworker``:
MultiWorkerMirroredStrategy over the hosts that ``TF_CONFIG`` describes; every worker
runs the same command, and only the chief writes the run folder.

Under any strategy the batch size is global (split between the replicas) and
:meth:`keras_ynet.model.YNet.train_step` divides its loss by the number of replicas,
because the optimiser sums the replicas' gradients (docs/distributed_training.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from keras_ynet.run_config import DISTRIBUTE_MODES


@dataclasses.dataclass(frozen=True)
class Placement:
    """A strategy and this process's part in it.

    Attributes:
        strategy: the ``tf.distribute.Strategy`` to build and train the model under.
        mode: one of :data:`DISTRIBUTE_MODES`.
        task: ``"chief"`` for the process that writes the run folder, else e.g.
            ``"worker-1"``.
    """

    strategy: object
    mode: str
    task: str = "chief"

    @property
    def is_chief(self) -> bool:
        return self.task == "chief"

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def backup_dir(self, out: Path) -> Path:
        """Where this process keeps its resume state: workers apart from the chief keep
        theirs beside it, so two workers on one host never write the same file."""
        return Path(out) / ("backup" if self.is_chief else f"backup-{self.task}")


def read_tf_config(environ=None) -> dict:
    """``TF_CONFIG`` checked: a cluster of ``host:port`` lists and this process's task.

    Raises ValueError naming the problem (TensorFlow's own messages for these cases are a
    hang or a gRPC error minutes later).
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "--distribute multiworker needs TF_CONFIG: "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(k in cluster for k in ("chief", "worker")):
        raise ValueError('TF_CONFIG: "cluster" must list "worker" (and optionally "chief") hosts')
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(
            isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts
        ):
            raise ValueError(f'TF_CONFIG: cluster "{kind}" must be a list of "host:port"')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f'TF_CONFIG: "task.type" must be one of {sorted(cluster)}')
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f'TF_CONFIG: "task.index" must be in 0..{len(cluster[task["type"]]) - 1}, got {index!r}'
        )
    return config


def task_name(tf_config: dict) -> str:
    """``"chief"`` for the process that writes: the chief, or worker 0 without one."""
    kind, index = tf_config["task"]["type"], tf_config["task"]["index"]
    if kind == "chief" or (kind == "worker" and index == 0 and "chief" not in tf_config["cluster"]):
        return "chief"
    return f"{kind}-{index}"


def make_placement(mode: str) -> Placement:
    """The strategy of ``mode``; call it before any other TensorFlow work (a multi-worker
    strategy must be made before the runtime starts)."""
    if mode not in DISTRIBUTE_MODES:
        raise ValueError(f"distribute must be one of {DISTRIBUTE_MODES}, got {mode!r}")
    if mode == "multiworker":
        tf_config = read_tf_config()  # checked before TensorFlow is imported
    import tensorflow as tf

    if mode == "none":
        return Placement(tf.distribute.get_strategy(), mode)
    if mode == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return Placement(tf.distribute.MirroredStrategy(devices=devices), mode)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Placement(strategy, mode, task_name(tf_config))


def use_logical_cpus(count: int) -> None:
    """Splits this process's CPU into ``count`` logical devices, so ``mirrored`` runs
    ``count`` replicas on a host without a GPU (for tests and benchmarks: the replicas
    share the same cores). Call it before TensorFlow runs anything."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
