"""The weight stream of a flash-backed engine: the weight-memory words in the order the tile
fill takes them during one inference, as bytes for a SPI NOR flash.

A flash-backed engine keeps no weight-memory words on chip: at the start of every inference
it reads the whole stream from the flash, once, from the first byte (``FlashReader``), and
hands the fill one word each time it takes one.  The stream is the fill's read trace
(``Scheme.weight_trace``), not the memory image: a word the fill read twice would be stored
twice (none does today: MLG keeps its level-1 basis in the fill for the layer's later tiles),
so the reader never seeks.  Each word takes
``ceil(weight_word_bits / 8)`` bytes, least significant byte first.
"""

from __future__ import annotations

from . import schemes

#: Flash clocks before the first data bit of a read: command (8), address (24), dummy (8).
COMMAND_CLOCKS = 8 + 24 + 8

__all__ = ["COMMAND_CLOCKS", "weight_trace", "word_bytes", "flash_image", "stream_bits", "parse_flash",
           "flash_bits_per_cycle"]


def weight_trace(plan) -> list[int]:
    """Weight-memory addresses in the order the fill takes them over one inference."""
    scheme = schemes.get(plan.scheme)
    return [a for ly in plan.weighted for tile in scheme.weight_trace(plan, ly) for a in tile]


def word_bytes(plan) -> int:
    """Bytes one weight word takes in the stream."""
    return (plan.weight_word_bits + 7) // 8


def flash_image(plan) -> bytes:
    """The weight stream of ``plan`` as flash bytes (see the module docstring)."""
    nb, words = word_bytes(plan), plan.weight_words
    return b"".join(int(words[a]).to_bytes(nb, "little") for a in weight_trace(plan))


def stream_bits(plan) -> int:
    """Bits the engine reads from the flash per inference."""
    return 8 * word_bytes(plan) * len(weight_trace(plan))


def parse_flash(text: str) -> tuple[bool, int]:
    """``"qspi[:DIV]"`` / ``"spi[:DIV]"`` -> ``(quad, divider)``; one-line ``ValueError``."""
    kind, _, div = str(text).partition(":")
    if kind not in ("qspi", "spi"):
        raise ValueError(f"Weight flash must be 'qspi[:DIVIDER]' or 'spi[:DIVIDER]', not {text!r}")
    try:
        divider = int(div) if div else 1
    except ValueError:
        divider = 0
    if not 1 <= divider <= 255:
        raise ValueError(f"Weight flash clock divider must be an integer in 1..255, not {div!r}")
    return kind == "qspi", divider


def flash_bits_per_cycle(text: str) -> float:
    """Bits per clock cycle the flash delivers while streaming (SCK = clock / 2 / divider)."""
    quad, divider = parse_flash(text)
    return (4 if quad else 1) / (2 * divider)
