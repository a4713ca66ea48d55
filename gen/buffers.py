"""Activation buffers by liveness: where each tensor lives in the engine's activation memory.

Tensors are stored in ``[C, H, W]`` order, one u8 / s8 value per byte.  A word holds ``cpar``
bytes (``Plan.cpar``, the input channels a MAC lane takes per cycle): channel ``c`` of a
tensor is byte ``c % cpar`` of words ``base + (c // cpar) * H * W + pixel``, so one read gives
``cpar`` consecutive channels of a pixel; addresses and sizes below are in words.  A tensor is live from
the layer that writes it to the last layer that reads it (as input or residual); the input
image is written before the first layer and lives until its last reader.  Each tensor gets the
lowest address range that no tensor live at the same time occupies (first fit, largest
first), so the memory is the peak of what is live, not the sum.  The final layer's values
leave on the output stream and take no buffer.

Banked (``bank_words > 0``, for single-port RAM such as the iCE40 UP5K's SPRAM): every tensor
takes whole banks, so tensors live at the same time never share a bank, and a layer's input,
residual and output (all live while it runs) are in different banks: each bank sees at most
one access per cycle.
"""

from __future__ import annotations

__all__ = ["allocate", "buffer_report", "memory_words", "banks_used", "words"]


def words(c: int, h: int, w: int, cpar: int = 1) -> int:
    """Words a ``c x h x w`` tensor takes with ``cpar`` channels per word."""
    return -(-c // cpar) * h * w


def _size(lp, cpar: int = 1) -> int:
    return words(lp.cout, lp.oh, lp.ow, cpar)


def input_words(plans, input_shape, cpar: int = 1) -> int:
    """Words of the input tensor: the image's, or with a windowed first layer
    (``LayerPlan.window``) its ``k * k`` channels of taps."""
    c, h, w = input_shape
    c = next((lp.cin for lp in plans if lp.src == -1 and lp.window), c)
    return words(c, h, w, cpar)


def allocate(plans, input_shape, bank_words: int = 0, cpar: int = 1) -> int:
    """Set ``in_base``, ``out_base``, ``res_base`` of every layer; returns the memory depth.
    ``bank_words > 0``: each tensor takes whole banks of that many words; ``cpar``: channels
    per word."""
    n = len(plans)

    def room(size):
        return -(-size // bank_words) * bank_words if bank_words else size
    # tensor id -> (size, first layer alive, last layer alive); -1 is the input
    tensors = {-1: [room(input_words(plans, input_shape, cpar)), -1, -1]}
    for i, lp in enumerate(plans[:-1]):
        tensors[i] = [room(_size(lp, cpar)), i, i]
    for i, lp in enumerate(plans):
        tensors[lp.src][2] = max(tensors[lp.src][2], i)
        if lp.res >= 0:
            tensors[lp.res][2] = max(tensors[lp.res][2], i)
    placed = {}                               # id -> (base, size)
    for t in sorted(tensors, key=lambda t: (-tensors[t][0], t)):
        size, first, last = tensors[t]
        busy = sorted((b, b + s) for u, (b, s) in placed.items()
                      if not (tensors[u][2] < first or last < tensors[u][1]))
        base = 0
        for lo, hi in busy:
            if base + size <= lo:
                break
            base = max(base, hi)
        placed[t] = (base, size)
    for i, lp in enumerate(plans):
        lp.in_base = placed[lp.src][0]
        lp.out_base = placed[i][0] if i < n - 1 else 0
        lp.res_base = placed[lp.res][0] if lp.res >= 0 else 0
    return max((b + s for b, s in placed.values()), default=1)


def buffer_report(plans, input_shape, cpar: int = 1) -> dict:
    """Each buffer's size and place (in words of ``cpar`` bytes), and the peak activation
    memory in bytes."""
    rows = [{"tensor": "input", "base": next(lp.in_base for lp in plans if lp.src == -1),
             "words": input_words(plans, input_shape, cpar)}]
    rows += [{"tensor": lp.name, "base": lp.out_base, "words": _size(lp, cpar)}
             for lp in plans[:-1]]
    peak = max(r["base"] + r["words"] for r in rows)
    return {"buffers": rows, "peak_bytes": peak * cpar,
            "sum_bytes": sum(r["words"] for r in rows) * cpar}


def memory_words(plans, input_shape, cpar: int = 1) -> int:
    """Words (of ``cpar`` bytes) the activation memory needs for ``plans`` as placed (at
    least 2)."""
    ends = [lp.in_base + input_words(plans, input_shape, cpar) for lp in plans if lp.src == -1]
    ends += [lp.out_base + _size(lp, cpar) for lp in plans[:-1]]
    return max(2, *ends)


def banks_used(plans, input_shape, bank_words: int, cpar: int = 1) -> int:
    """Banks of ``bank_words`` words the banked placement of ``plans`` takes."""
    return -(-memory_words(plans, input_shape, cpar) // bank_words)
