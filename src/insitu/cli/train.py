"""``insitu train``: train a real-network topology on PyTorch and write its ONNX file, or
(``--scheme``) fine-tune a checkpoint for a weight scheme (``gen.torch_qat``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ..gen import schemes as registry
from ..gen import torch_qat, torch_train
from ..gen.datasets import load_data
from ..gen.layer import ModelError
from ..gen.model import load_network
from ..gen.util import atomic_dir
from ..gen.util import unknown as unknown_name
from ..gen.zoo import MODELS, export_onnx
from .common import UserError, scheme_knobs
from .demo_real import checkpoint


def _cmd_train(args) -> int:
    try:
        import torch  # noqa: F401  (an optional extra: a clear error when missing)
    except ImportError:
        raise UserError("insitu train needs PyTorch: run 'make setup' (it installs the CPU "
                        "build)") from None
    if args.model not in MODELS:
        raise UserError(f"Unknown model '{args.model}' (models: {', '.join(MODELS)})")
    if args.epochs < 1:
        raise UserError(f"--epochs must be a positive integer, not {args.epochs}")
    if args.scheme and args.scheme not in registry.NAMES:
        raise UserError(unknown_name("scheme", args.scheme, registry.NAMES))
    knobs = scheme_knobs(args.scheme, args.set) if args.scheme else {}
    try:
        data = load_data(args.data)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    say = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    if args.scheme:
        return _finetune(args, knobs, data, say)
    say(f"training {args.model} on {data.name} ({len(data.x_train)} images, seed {args.seed}, "
        f"{args.epochs} epochs)")
    module, history = torch_train.train(args.model, data, epochs=args.epochs, seed=args.seed,
                                        limit=args.limit, progress=say)
    out = Path(args.output)
    report = {"model": args.model, "data": data.name, "seed": args.seed, "epochs": args.epochs,
              "limit": args.limit, "history": history,
              "test_accuracy": history[-1]["test_accuracy"],
              "command": "insitu train " + " ".join(sys.argv[2:])}
    with atomic_dir(out) as tmp:
        export_onnx(module, (data.shape[0], torch_train.INPUT_SIZE, torch_train.INPUT_SIZE),
                    tmp / "model.onnx")
        (tmp / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model}: test accuracy {100 * report['test_accuracy']:.2f}% after "
          f"{args.epochs} epochs; wrote {out}/model.onnx")
    return 0


def _finetune(args, knobs, data, say) -> int:
    try:
        src = Path(args.start) if args.start else checkpoint(args.model)
        layers, shape = load_network(src)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    if shape is None:
        raise UserError(f"--from must be an ONNX file (it carries the input shape), not {src}")
    say(f"fine-tuning {src} for {args.scheme} on {data.name} ({len(data.x_train)} images, "
        f"seed {args.seed}, {args.epochs} epochs)")
    tuned, codes, history = torch_qat.finetune(layers, data, args.scheme, knobs=knobs,
                                               epochs=args.epochs, seed=args.seed,
                                               limit=args.limit, lr=args.lr, progress=say)
    out = Path(args.output)
    rel = os.path.relpath(src)
    where = str(src) if rel.startswith("..") else rel
    report = {"model": args.model, "scheme": args.scheme, "knobs": knobs, "from": where,
              "data": data.name, "seed": args.seed, "epochs": args.epochs, "limit": args.limit,
              "history": history, "test_accuracy_before": history[0]["test_accuracy"],
              "test_accuracy": history[-1]["test_accuracy"],
              "command": "insitu train " + " ".join(sys.argv[2:])}
    with atomic_dir(out) as tmp:
        torch_qat.export_layers_onnx(tuned, shape, tmp / "model.onnx")
        if codes is not None:
            np.savez(tmp / "codes.npz", **torch_qat.codes_arrays(args.scheme, codes))
        (tmp / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model} {args.scheme}: test accuracy with the scheme's weights "
          f"{100 * report['test_accuracy_before']:.2f}% -> {100 * report['test_accuracy']:.2f}% "
          f"after {args.epochs} epochs of fine-tuning; wrote {out}/model.onnx"
          + (" and codes.npz" if codes is not None else ""))
    return 0


def register(sub) -> None:
    """``train``."""
    t = sub.add_parser("train", help="train resnet8 / dscnn on Fashion-MNIST (PyTorch, CPU) "
                       "and write model.onnx")
    t.add_argument("--model", required=True, help=f"{', '.join(MODELS)}")
    t.add_argument("--scheme", help="fine-tune a checkpoint for this weight scheme instead "
                   f"({', '.join(registry.NAMES)}): straight-through on the rebuilt weights, or "
                   "the factor codes (mlg)")
    t.add_argument("--from", dest="start", metavar="MODEL.onnx", help="with --scheme: the "
                   "checkpoint to fine-tune (default: models/<model>/model.onnx)")
    t.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="with --scheme: a compressor knob")
    t.add_argument("--lr", type=float, help="with --scheme: learning rate (default: 0.001 "
                   "SGD on weights, 0.02 Adam on factor codes)")
    t.add_argument("--epochs", type=int, default=15, help="epochs (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    t.add_argument("--data", metavar="DIR|NPZ", help="IDX folder, CIFAR-10 batches or .npz "
                   "(default: Fashion-MNIST from the Debian package)")
    t.add_argument("--limit", type=int, help="train on the first N images only")
    t.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    t.set_defaults(func=_cmd_train)
