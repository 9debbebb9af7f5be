"""`sharenet export` (ONNX / torch.export, optionally int8) and `sharenet predict`."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX or torch.export (pt2), each shared tensor stored once",
        description="Export a run directory or sharenet .safetensors file. The file stores every distinct "
        "tensor once (a shared kernel is one initializer) and the run's class names and preprocessing.",
    )
    p.add_argument("source", help="run directory or sharenet .safetensors file")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx")
    p.add_argument("--out", required=True, help="output file (.onnx or .pt2)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--batch", default="dynamic", help="'dynamic' (default) or a fixed batch size")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: int8 post-training quantization (onnxruntime, static QDQ), calibrated on training images",
    )
    p.add_argument("--calibration", type=int, default=512, help="training images to calibrate int8 on (default 512)")
    p.add_argument(
        "--check",
        action="store_true",
        help="run the file on the run's real test images: logit difference to the eager model, top-1 "
        "agreement and accuracy",
    )
    p.add_argument("--check-images", type=int, default=None, help="test images for --check (default: all)")
    p.add_argument("--data-dir", help="where the run's data set lives, if not found by default")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_export)

    p = sub.add_parser(
        "predict",
        help="classify image files with a run, a .safetensors or an exported .onnx/.pt2 file",
        description="MODEL is a run directory, a sharenet .safetensors file, or an .onnx/.pt2 file written by "
        "`sharenet export`; its preprocessing and class names come from the file.",
    )
    p.add_argument("model")
    p.add_argument("images", nargs="+", help="PNG/JPEG files or folders (searched recursively)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="one JSON list: file, top classes with index and probability")
    p.set_defaults(run=run_predict)


def run_export(args) -> int:
    from ..deploy import check as checks
    from ..deploy.artifact import load_model, open_runner
    from ..deploy.export import export
    from ..deploy.quantize import quantize
    from ..errors import InvalidArgumentError

    if args.int8 and args.format != "onnx":
        raise InvalidArgumentError("--int8 needs --format onnx")
    if args.calibration < 1:
        raise InvalidArgumentError(f"--calibration must be at least 1, got {args.calibration}")
    model, meta = load_model(args.source)
    if args.int8 and model.share == "ring":
        raise InvalidArgumentError(
            "--int8 quantizes conv kernels stored in the file, and a ring model's kernels are computed in the graph "
            "from the ring (int8 would make the file larger); export it without --int8"
        )
    out = Path(args.out)
    if args.int8:
        calibration = checks.dataset_images(meta, "train", args.calibration, args.data_dir)[0]
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export(model, Path(tmp) / "fp32.onnx", "onnx", meta, batch=args.batch, opset=args.opset)
            quantize(fp32.path, out, calibration)
        result = {
            "path": str(out),
            "format": "onnx-int8",
            "file_bytes": out.stat().st_size,
            "fp32_file_bytes": fp32.file_bytes,
            "expected_fp32_bytes": fp32.expected_bytes,
        }
    else:
        done = export(model, out, args.format, meta, batch=args.batch, opset=args.opset)
        result = {
            "path": str(out),
            "format": done.format,
            "file_bytes": done.file_bytes,
            "tensor_bytes": done.tensor_bytes,
            "expected_bytes": done.expected_bytes,
            "overhead": done.overhead,
        }
    if args.check:
        x, y = checks.dataset_images(meta, "test", args.check_images, args.data_dir)
        reference = checks.batched(open_runner(args.source).run, x)
        result["check"] = checks.compare(reference, checks.batched(open_runner(out).run, x), y)
    print(json.dumps(result, indent=2) if args.json else format_export(result))
    return 0


def format_export(r: dict) -> str:
    lines = [f"wrote {r['path']} ({r['format']}): {r['file_bytes']:,} bytes"]
    if "tensor_bytes" in r:
        lines.append(
            f"  tensors {r['tensor_bytes']:,} bytes; (parameters + BatchNorm statistics) x 4 = "
            f"{r['expected_bytes']:,} ({r['overhead']:+.2%})"
        )
    else:
        lines.append(f"  fp32 export {r['fp32_file_bytes']:,} bytes ({r['file_bytes'] / r['fp32_file_bytes']:.2f}x)")
    if "check" in r:
        c = r["check"]
        lines.append(
            f"  check on {c['images']:,} test images: max |logit diff| {c['max_abs_diff']:.3g} "
            f"({c['relative_diff']:.2g} of the logit scale {c['logit_scale']:.3g}), top-1 agreement "
            f"{c['top1_agreement']:.2%}, top-1 {c['top1']:.2%} (eager {c['reference_top1']:.2%})"
        )
    return "\n".join(lines)


def run_predict(args) -> int:
    from ..data.preprocess import image_files
    from ..deploy.artifact import open_runner
    from ..deploy.predict import format_rows, predict
    from ..errors import InvalidArgumentError

    for name, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise InvalidArgumentError(f"{name} must be at least 1, got {value}")
    runner = open_runner(args.model)
    rows = predict(runner, image_files(args.images), args.top_k, args.batch_size)
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0
