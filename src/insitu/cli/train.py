"""``insitu train``: train a real-network topology on PyTorch and write its ONNX file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..gen import torch_train
from ..gen.datasets import load_data
from ..gen.layer import ModelError
from ..gen.util import atomic_dir
from ..gen.zoo import MODELS, export_onnx
from .common import UserError


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
    try:
        data = load_data(args.data)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    say = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
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


def register(sub) -> None:
    """``train``."""
    t = sub.add_parser("train", help="train resnet8 / dscnn on Fashion-MNIST (PyTorch, CPU) "
                       "and write model.onnx")
    t.add_argument("--model", required=True, help=f"{', '.join(MODELS)}")
    t.add_argument("--epochs", type=int, default=15, help="epochs (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    t.add_argument("--data", metavar="DIR|NPZ", help="IDX folder, CIFAR-10 batches or .npz "
                   "(default: Fashion-MNIST from the Debian package)")
    t.add_argument("--limit", type=int, help="train on the first N images only")
    t.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    t.set_defaults(func=_cmd_train)
