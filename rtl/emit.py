"""Verilog emitters: the registry of generatable blocks, and the compiled design folder.

Each block has a factory taking keyword parameters, the defaults used when no ``--set`` is
given, and a one-line description.  ``generate(name, overrides)`` builds the component and
returns its Verilog text; bad names or values raise :class:`BlockError` with one sentence.

:func:`write_design` writes the folder ``insitu compile`` makes (see ``gen.design``):
``engine.v`` (top module ``insitu_engine``, memories initialised), ``manifest.json``,
``weight.hex`` / ``aux.hex`` / ``post.hex`` (one word per line), ``vectors.npz`` (u8 inputs
and golden outputs in emission order), ``compile_report.json`` and ``checksums.json`` (SHA-256
of the shipped files, checked by every later command); the folder is written
under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from amaranth.back import verilog

from ..gen.compiler import Plan
from ..gen.design import (
    FLASH,
    TOP,
    compile_report,
    golden_vectors,
    hex_image,
    write_checksums,
)
from ..gen.flashimage import flash_image
from ..gen.memmap import POST_BITS
from ..gen.mlg import MlgConfig
from ..gen.smartdeal import SdConfig
from ..gen.util import atomic_dir, unknown
from ..gen.util import parse_sets as parse_kv
from .asm import AsmMacArray
from .engine import Engine
from .pow2 import Pow2Decoder
from .weightgen import MlgWeightGen, SdWeightGen


class BlockError(ValueError):
    """A bad block name or parameter; the message is one sentence for the user."""


@dataclass(frozen=True)
class Block:
    name: str
    description: str
    factory: Callable
    defaults: dict = field(default_factory=dict)
    relevant: Callable | None = None      # params -> the keys that apply (None: all)

    @property
    def module_name(self) -> str:
        return self.name.replace("-", "_")


def _asm_mac(**kw):
    AsmMacArray.validate(**kw)          # reject before constructing: no half-built component
    return AsmMacArray(**kw)


def _pow2_decoder(**kw):
    Pow2Decoder.validate(**kw)
    return Pow2Decoder(**kw)


_SD_KEYS = ("e_min", "e_max", "word_bits", "basis_bits", "requant")
_MLG_KEYS = ("Bi", "Bo", "K2", "qb", "qu", "qv", "level1", "level2")


def _weight_gen(scheme, **kw):
    if scheme == "smartdeal":
        args = {k: kw[k] for k in _SD_KEYS}
        SdWeightGen.validate(**args)
        return SdWeightGen(**args)
    if scheme == "mlg":
        args = {k: kw[k] for k in _MLG_KEYS}
        MlgWeightGen.validate(**args)
        return MlgWeightGen(**args)
    raise ValueError(f"Weight generator scheme must be smartdeal or mlg, not {scheme!r}")


def _weight_gen_relevant(params):
    keys = {"smartdeal": _SD_KEYS, "mlg": _MLG_KEYS}.get(params["scheme"], ())
    return {"scheme", *keys}


#: The blocks' defaults are the schemes' default configurations (one source).
_SD, _MLG = SdConfig(), MlgConfig()

BLOCKS: dict[str, Block] = {
    b.name: b for b in [
        Block("asm-mac", "ASM shift-add MAC array: shared precompute bank, lanes of "
              "select/shift/add, accumulators", _asm_mac,
              {"alphabet": "A4", "weight_bits": 8, "act_bits": 8, "act_signed": False,
               "lanes": 8, "acc_len": 1024, "acc_bits": None}),
        Block("pow2-decoder", "power-of-2 sparse decoder: packed SmartDeal coefficient words "
              "in, one kernel row of shift/sign/select controls out per cycle", _pow2_decoder,
              {"e_min": _SD.e_min, "e_max": _SD.e_max, "word_bits": _SD.word_bits}),
        Block("weight-gen", "basis-coefficient weight generator: scheme=smartdeal (decoder + "
              "shift-add rebuild + int8 requant) or scheme=mlg (two-level generation)",
              _weight_gen,
              {"scheme": "smartdeal", "e_min": _SD.e_min, "e_max": _SD.e_max,
               "word_bits": _SD.word_bits, "basis_bits": _SD.basis_bits, "requant": True,
               "Bi": _MLG.Bi, "Bo": _MLG.Bo, "K2": 9, "qb": _MLG.qb, "qu": _MLG.qu,
               "qv": _MLG.qv, "level1": True, "level2": True},
              _weight_gen_relevant),
    ]
}


def _convert(key: str, text: str, default):
    """Convert a ``--set`` value to the type of the parameter's default."""
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise BlockError(f"Parameter '{key}' must be true or false, not {text!r}")
    if isinstance(default, int) or default is None:
        if default is None and text.strip().lower() in ("", "none", "auto"):
            return None
        try:
            return int(text, 0)
        except ValueError:
            raise BlockError(f"Parameter '{key}' must be an integer, not {text!r}") from None
    return text


def parse_sets(block: Block, sets: list[str]) -> dict:
    params = dict(block.defaults)
    explicit = []
    try:
        items = parse_kv(sets)
    except ValueError as exc:
        raise BlockError(str(exc)) from None
    for key, value in items.items():
        key = key.replace("-", "_")
        if key not in block.defaults:
            raise BlockError(f"Block '{block.name}' has no parameter '{key}' "
                             f"(parameters: {', '.join(block.defaults)})")
        params[key] = _convert(key, value, block.defaults[key])
        explicit.append(key)
    if block.relevant is not None:
        applies = block.relevant(params)
        for key in explicit:
            if key not in applies:
                raise BlockError(f"Parameter '{key}' does not apply to {block.name} with "
                                 f"scheme={params.get('scheme')}")
    return params


def get_block(name: str) -> Block:
    if name not in BLOCKS:
        raise BlockError(unknown("block", name, BLOCKS))
    return BLOCKS[name]


def build(name: str, params: dict):
    """Construct the component; constructor errors become :class:`BlockError`."""
    block = get_block(name)
    try:
        return block.factory(**params)
    except (TypeError, ValueError) as exc:
        raise BlockError(str(exc)) from None


def to_verilog(component, module_name: str) -> str:
    return verilog.convert(component, name=module_name, emit_src=False)


def generate(name: str, sets: list[str] | None = None) -> tuple[str, object]:
    """Verilog text and the component for block ``name`` with ``--set`` overrides."""
    block = get_block(name)
    component = build(name, parse_sets(block, sets or []))
    return to_verilog(component, block.module_name), component


_AUTO_REG = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+)\s+= 0;$",
                       re.MULTILINE)


def time0_safe(text: str) -> str:
    """Make Yosys' ``always @*`` blocks run at time 0 in event-driven simulators.

    Yosys reads a dummy register in every ``always @*`` block so that the block runs once at
    start-up, but Icarus applies a declaration initialiser before the blocks wait on it, so a
    block whose real inputs never change (a per-layer constant selected by a register that
    stays 0 for a whole layer) would keep ``x``.  An ``initial`` assignment of 1 to the dummy
    register gives every such block its time-0 event.  Synthesis ignores the unused register.
    """
    return _AUTO_REG.sub(lambda mo: f"{mo.group(0)}\n{mo.group(1)}initial {mo.group(2)} = 1;", text)


def write_design(plan: Plan, out_dir, x_u8: np.ndarray | None = None, progress=None,
                 source=None) -> dict:
    """Elaborate the engine and write the folder atomically; returns the compile report."""
    out_dir = Path(out_dir)
    if progress:
        progress("elaborate engine and write Verilog")
    engine = Engine(plan)
    text = time0_safe(verilog.convert(engine, name=TOP, emit_src=False))
    if x_u8 is None:
        x_u8 = np.random.default_rng(0).integers(0, 256, (8, int(np.prod(plan.input_shape))))
    x_u8 = np.asarray(x_u8).reshape(len(x_u8), -1)
    if progress:
        progress(f"golden model on {len(x_u8)} vectors")
    y = golden_vectors(plan, x_u8)
    report = compile_report(plan)
    with atomic_dir(out_dir) as tmp:
        (tmp / "engine.v").write_text(text)
        (tmp / "manifest.json").write_text(plan.to_json())
        (tmp / "weight.hex").write_text(hex_image(plan.weight_words, plan.weight_word_bits))
        (tmp / "aux.hex").write_text(hex_image(plan.aux_words, plan.aux_word_bits))
        (tmp / "post.hex").write_text(hex_image(plan.post_words, POST_BITS))
        if plan.weight_flash:
            (tmp / FLASH).write_bytes(flash_image(plan))
        if source is not None:          # the float model, for simulate --labels
            shutil.copyfile(source, tmp / f"model{Path(source).suffix}")
        np.savez(tmp / "vectors.npz", x=x_u8.astype(np.uint8), y=y)
        (tmp / "compile_report.json").write_text(json.dumps(report, indent=1))
        write_checksums(tmp)
    return report
