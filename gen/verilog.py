"""Verilog emitters: the registry of generatable blocks and their parameters.

Each block has a factory taking keyword parameters, the defaults used when no ``--set`` is
given, and a one-line description.  ``generate(name, overrides)`` builds the component and
returns its Verilog text; bad names or values raise :class:`BlockError` with one sentence.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class BlockError(ValueError):
    """A bad block name or parameter; the message is one sentence for the user."""


@dataclass(frozen=True)
class Block:
    name: str
    description: str
    factory: Callable
    defaults: dict = field(default_factory=dict)

    @property
    def module_name(self) -> str:
        return self.name.replace("-", "_")


def _asm_mac(**kw):
    from ..rtl.asm import AsmMacArray
    AsmMacArray.validate(**kw)          # reject before constructing: no half-built component
    return AsmMacArray(**kw)


BLOCKS: dict[str, Block] = {
    b.name: b for b in [
        Block("asm-mac", "ASM shift-add MAC array: shared precompute bank, lanes of "
              "select/shift/add, accumulators", _asm_mac,
              {"alphabet": "A4", "weight_bits": 8, "act_bits": 8, "act_signed": False,
               "lanes": 8, "acc_len": 1024, "acc_bits": None}),
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
    for item in sets or []:
        if "=" not in item:
            raise BlockError(f"--set expects KEY=VALUE, not {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in block.defaults:
            raise BlockError(f"Block '{block.name}' has no parameter '{key}' "
                             f"(parameters: {', '.join(block.defaults)})")
        params[key] = _convert(key, value, block.defaults[key])
    return params


def get_block(name: str) -> Block:
    if name not in BLOCKS:
        raise BlockError(f"Unknown block '{name}' (blocks: {', '.join(BLOCKS)})")
    return BLOCKS[name]


def build(name: str, params: dict):
    """Construct the component; constructor errors become :class:`BlockError`."""
    block = get_block(name)
    try:
        return block.factory(**params)
    except (TypeError, ValueError) as exc:
        raise BlockError(str(exc)) from None


def to_verilog(component, module_name: str) -> str:
    from amaranth.back import verilog
    return verilog.convert(component, name=module_name, emit_src=False)


def generate(name: str, sets: list[str] | None = None) -> tuple[str, object]:
    """Verilog text and the component for block ``name`` with ``--set`` overrides."""
    block = get_block(name)
    component = build(name, parse_sets(block, sets or []))
    return to_verilog(component, block.module_name), component


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a failure leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
