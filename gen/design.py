"""A compiled design folder: the engine's Verilog, memory images, manifest, golden vectors.

Folder contents (``insitu compile ... -o DIR``):

* ``engine.v``: the whole engine, top module ``insitu_engine``, memories initialised;
* ``manifest.json``: the plan (layer table, scales, widths, memory words in hex);
* ``weight.hex``, ``aux.hex``, ``post.hex``: the memory images, one word per line (hex, for
  ``$readmemh`` or a loader over ``i_load``);
* ``flash.bin`` (only with a flash weight memory, ``Plan.weight_flash``): the weight stream
  the flash holds (``gen.flashimage``);
* ``vectors.npz``: ``x`` (u8 inputs, ``[N, C*H*W]``) and ``y`` (golden final-layer values in
  the engine's emission order), from ``gen.network.forward_int`` on the decoded images;
* ``compile_report.json``: weights, weight-memory bits, bits per weight, ratios, MACs;
* ``checksums.json``: the SHA-256 of each shipped file (``SHIPPED``: the Verilog, the manifest
  and the images).  :func:`load_plan` checks them, so ``simulate``, ``synth`` and ``run`` use
  exactly the files compile wrote, or refuse with the name of the changed file.

The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .buffers import buffer_report
from .compiler import Plan, golden_layers
from .cycles import estimate_cycles
from .flashimage import flash_bits_per_cycle, stream_bits
from .model import ModelError
from .network import forward_int, output_order

__all__ = ["load_plan", "golden_vectors", "canonical_outputs", "compile_report",
           "TOP", "SHIPPED", "FLASH", "write_checksums", "verify_design"]

TOP = "insitu_engine"
#: The files of a design folder that hardware is built or loaded from (and ``FLASH`` in a
#: folder whose weights stream from a flash).
SHIPPED = ("engine.v", "manifest.json", "weight.hex", "aux.hex", "post.hex")
FLASH = "flash.bin"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checksums(folder) -> None:
    """``checksums.json`` of the shipped files in ``folder``."""
    d = Path(folder)
    sums = {name: _sha256(d / name) for name in SHIPPED + (FLASH,) if (d / name).exists()}
    (d / "checksums.json").write_text(json.dumps({"sha256": sums}, indent=1) + "\n")


def verify_design(folder) -> None:
    """Refuse (one line) a folder whose shipped files differ from their compiled SHA-256."""
    d = Path(folder)
    try:
        sums = json.loads((d / "checksums.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"'{d}' has no valid checksums.json: recompile it with insitu "
                         f"compile") from None
    for name in SHIPPED + ((FLASH,) if FLASH in sums else ()):
        path = d / name
        if not path.exists():
            raise ModelError(f"'{path}' is missing: recompile the folder")
        if sums.get(name) != _sha256(path):
            raise ModelError(f"'{path}' differs from the file compile wrote (SHA-256 in "
                             f"checksums.json): refusing to use a changed image; recompile")


def golden_vectors(plan: Plan, x_u8: np.ndarray) -> np.ndarray:
    """Golden final-layer values ``[N, outputs]`` in emission order."""
    x = np.asarray(x_u8, dtype=np.int64).reshape((len(x_u8),) + tuple(plan.input_shape))
    y = forward_int(golden_layers(plan), x).reshape(len(x), -1)
    ly = plan.layers[-1]
    return y[:, output_order(ly.cout, ly.oh * ly.ow, plan.lanes)]


def canonical_outputs(plan: Plan, outs) -> np.ndarray:
    """Final-layer values in emission order (as the engine sends them) back in the model's
    ``[channel, pixel]`` order: the inverse of :func:`golden_vectors`' reordering."""
    outs = np.asarray(outs, dtype=np.int64)
    ly = plan.layers[-1]
    canon = np.zeros_like(outs)
    canon[:, output_order(ly.cout, ly.oh * ly.ow, plan.lanes)] = outs
    return canon


def compile_report(plan: Plan) -> dict:
    weights = plan.weights
    buffers = buffer_report(plan.layers, plan.input_shape, plan.cpar)
    bits = plan.weight_memory_bits
    est = estimate_cycles(plan)
    return {"scheme": plan.scheme, "lanes": plan.lanes, "cpar": plan.cpar,
            "post_lanes": plan.post_lanes,
            "layers": len(plan.layers),
            "weights": weights, "weight_memory_bits": bits,
            "weight_bits_read": plan.weight_bits_per_inference,
            "read_ratio_vs_int8": 8 * weights / plan.weight_bits_per_inference,
            "bits_per_weight": bits / weights, "dense_int8_bits": 8 * weights,
            "memory_ratio_vs_int8": 8 * weights / bits, "memory_ratio_vs_fp32": 32 * weights / bits,
            "macs_per_inference": plan.macs,
            "weight_port_bits": plan.weight_port_bits,
            "weight_flash": plan.weight_flash,
            **({"flash_bits_per_cycle": flash_bits_per_cycle(plan.weight_flash),
                "flash_bytes": stream_bits(plan) // 8} if plan.weight_flash else {}),
            "cycles_model": est.cycles, "limited_by": est.limit,
            "compressed_bits": plan.compressed_bits,
            "layout_bits": bits - plan.compressed_bits if plan.compressed_bits else 0,  # +/-
            "activation_bytes": buffers["peak_bytes"], "activation_buffers": buffers["buffers"],
            "layer_table": [{"name": ly.name, "kind": ly.kind,
                             "cin": ly.cout if ly.depthwise else ly.cin, "cout": ly.cout,
                             "in": [ly.h, ly.w], "out": [ly.oh, ly.ow], "pad": ly.pad,
                             "stride": ly.stride, "depthwise": ly.depthwise and not ly.pool,
                             "src": plan.layers[ly.src].name if ly.src >= 0 else "input",
                             "residual": plan.layers[ly.res].name if ly.res >= 0 else None,
                             "relu": ly.relu, "tiles": ly.tiles} for ly in plan.layers]}


def hex_image(words, bits) -> str:
    digits = max(1, -(-bits // 4))
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def load_plan(design_dir, *, verify: bool = True) -> Plan:
    """The plan of a compiled folder, with one-line errors for a missing or broken manifest;
    ``verify``: its shipped files must match ``checksums.json``."""
    d = Path(design_dir)
    man = d / "manifest.json"
    if not d.is_dir():
        raise ModelError(f"'{d}' is not a compiled design folder")
    if not man.exists():
        raise ModelError(f"'{d}' has no manifest.json: compile a model into it first")
    if verify:
        verify_design(d)
    try:
        return Plan.from_json(man.read_text())
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"'{man}' is not a valid manifest ({type(exc).__name__}: {exc})") from None
