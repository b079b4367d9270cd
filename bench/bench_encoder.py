"""Benchmark of the exported encoder: Keras vs ONNX Runtime vs LiteRT, one thread each.

Command lines:
    python bench/bench_encoder.py                       # untrained 256x256x1 YNet (~2 min)
    python bench/bench_encoder.py --model runs/rimone/model.keras --data ../shared/data/rimone_dl

Without ``--model`` an untrained default YNet (``--image-size`` x ``--image-size`` x
``--channels``, 64 bits) is built and its bit thresholds are fitted on chest phantoms,
so the codes are balanced as after training. The encoder is exported exactly as
``python -m export`` does (ONNX, float32 and int8 LiteRT) into a temporary folder.

Columns:

* ms/image: best wall time of one call over ``--repeats`` calls (batch 1; a third as many
  for larger batches, at least 3), divided by the batch; best-of, as in bench_index.py,
  because this machine's two cores are shared and noisy;
* x bound: that time over the FLOP bound, i.e. the encoder's multiply-add FLOPs
  (2 x MACs of every Conv / MatMul / Gemm in the ONNX graph) at this core's float32 rate,
  measured with a numpy matrix multiply on one thread;
* Keras predict: ``model.predict`` of the full YNet (what ``keras_ynet.ynet_codes`` runs) and
  of the hash sub-model only (the exported graph).

TensorFlow, ONNX Runtime, LiteRT and numpy are all restricted to one thread.
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
):
    os.environ[_var] = "1"  # one thread, set before numpy / TensorFlow create their pools
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def core_flop_rate(n: int = 1024, repeats: int = 5) -> float:
    """float32 FLOP/s of one core: best of ``repeats`` n x n matrix multiplies."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best


def onnx_flops(path: Path) -> int:
    """2 x multiply-accumulates of every Conv, MatMul and Gemm, per image."""
    import onnx

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # shapes for one image
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes[node.input[1]], shapes[node.output[0]]  # (M, C/g, kh, kw)
            flops += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            flops += 2 * int(np.prod(out)) * a[-1]
    return flops


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms_per_image(fn, batch: np.ndarray, repeats: int) -> float:
    fn(batch)  # warm-up (graph tracing, tensor allocation)
    return 1000.0 * min(_timed(lambda: fn(batch)) for _ in range(repeats)) / len(batch)


def build_model(args):
    """The model to benchmark and uint8 images for calibration and timing."""
    from deploy.preprocess import load_image, prepare_image
    from keras_ynet.model import YNet
    from keras_ynet.saving import load_ynet
    from keras_ynet.ynet_codes import calibrate_bit_thresholds

    if args.model is not None:
        model = load_ynet(args.model)
        if args.data is None:
            raise SystemExit("--model needs --data (images to calibrate int8 and time on)")
        from keras_ynet.dataset import load_dataset

        records = load_dataset(args.data, check_files=False, scan_masks=False).records
        size, _, channels = model.input_shape_
        images = [prepare_image(load_image(r.image), size, channels) for r in records[:64]]
        return model, np.stack(images)
    from keras_ynet.phantoms import make_phantoms

    with tempfile.TemporaryDirectory() as tmp:
        spec = make_phantoms(
            Path(tmp) / "ph", n_per_class=22, image_size=args.image_size, kind="chest"
        )
        images = np.stack(
            [
                prepare_image(load_image(r.image), args.image_size, args.channels)
                for r in spec.records
            ]
        )
    model = YNet(input_shape=(args.image_size, args.image_size, args.channels), bits=64)
    calibrate_bit_thresholds(model, images)
    return model, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="trained model.keras (default: untrained)")
    parser.add_argument("--data", type=Path, help="dataset folder, with --model")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from export.litert_export import SIGNATURE_KEY, export_litert
    from export.onnx_export import export_onnx
    from export.serving_graph import EncoderModule
    from keras_ynet.fingerprint import hash_submodel

    model, images = build_model(args)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    if max(batches) > len(images):
        images = np.concatenate([images] * (max(batches) // len(images) + 1))
    encoder = EncoderModule(model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_onnx(encoder, folder / "encoder.onnx", {})
        files = export_litert(encoder, folder, calibration_images=images[:64])
        sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
        flops = onnx_flops(folder / "encoder.onnx")
        rate = core_flop_rate()
        bound_ms = 1000.0 * flops / rate

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(
            str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"]
        )
        runners = {
            kind: Interpreter(model_path=str(path), num_threads=1).get_signature_runner(
                SIGNATURE_KEY
            )
            for kind, path in files.items()
        }
        sub = hash_submodel(model)
        rows = {
            "Keras predict (full YNet)": lambda x: model.predict(
                x.astype(np.float32), batch_size=len(x), verbose=0
            ),
            "Keras predict (hash sub-model)": lambda x: sub.predict(
                x.astype(np.float32), batch_size=len(x), verbose=0
            ),
            "ONNX Runtime": lambda x: session.run(["code"], {"image": x}),
            "LiteRT float32": lambda x: runners["tflite"](image=x),
            "LiteRT int8": lambda x: runners["tflite_int8"](image=x),
        }
        results = {}
        for name, fn in rows.items():
            for b in batches:
                results[name, b] = ms_per_image(
                    fn, images[:b], args.repeats if b == 1 else max(3, args.repeats // 3)
                )
                print(f"  {name} batch {b}: {results[name, b]:.2f} ms/image", file=sys.stderr)

    shape = "x".join(str(d) for d in model.input_shape_)
    params = hash_submodel(model).count_params()
    print(f"\nencoder {shape}, {model.bits} bits, {params:,} parameters (exported graph)")
    print(f"FLOPs per image: {flops / 1e6:.1f} M (2 x MACs of Conv/MatMul in encoder.onnx)")
    print(
        f"one core, float32 numpy matmul: {rate / 1e9:.1f} GFLOP/s -> bound {bound_ms:.2f} ms/image"
    )
    ratio = sizes["encoder_int8.tflite"] / sizes["encoder.tflite"]
    print(
        f"files: encoder.onnx {sizes['encoder.onnx'] / 1024:.0f} KiB, encoder.tflite "
        f"{sizes['encoder.tflite'] / 1024:.0f} KiB, encoder_int8.tflite "
        f"{sizes['encoder_int8.tflite'] / 1024:.0f} KiB ({100 * ratio:.0f}% of float)\n"
    )
    header = "| runtime (1 thread) | " + " | ".join(
        f"batch {b} ms/image | x bound" for b in batches
    )
    print(header + " |")
    print("|---|" + "---|---|" * len(batches))
    for name in rows:
        cells = " | ".join(
            f"{results[name, b]:.2f} | {results[name, b] / bound_ms:.1f}" for b in batches
        )
        print(f"| {name} | {cells} |")
    keras = results["Keras predict (full YNet)", 1]
    print(
        f"\nONNX Runtime batch 1 vs Keras predict: {keras / results['ONNX Runtime', 1]:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
