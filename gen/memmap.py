"""The engine's memory map: which memory a load word goes to, and the post-processing entry.

Shared by the compiler (which fills the images), the RTL (``insitu.rtl.engine``) and the
host protocol (``insitu.boards.protocol``), so the three agree by construction.

=========  ===  ==============================================================
memory     id   holds
=========  ===  ==============================================================
weight     0    the scheme's main image (ASM / int8 code words, SmartDeal
                coefficient stream, MLG basis words)
aux        1    SmartDeal basis entries, MLG ``V`` words (unused otherwise)
post       2    one :data:`POST` entry per output channel
coef       3    MLG level-1 coefficient words ``U`` (unused otherwise)
=========  ===  ==============================================================
"""

from __future__ import annotations

from .fields import Fields

__all__ = ["MEM_WEIGHT", "MEM_AUX", "MEM_POST", "MEM_COEF", "MEMORIES", "POST", "POST_BITS",
           "BIAS_BITS", "M_BITS", "S_BITS", "OUT_BITS", "load_data_bits"]

MEM_WEIGHT, MEM_AUX, MEM_POST, MEM_COEF = 0, 1, 2, 3
MEMORIES = {"weight": MEM_WEIGHT, "aux": MEM_AUX, "post": MEM_POST, "coef": MEM_COEF}
BIAS_BITS, M_BITS, S_BITS = 32, 16, 6
OUT_BITS = 32               # final-layer values on the output stream

#: One output channel's post-processing entry: ``((acc + bias) * m + 2**(s-1)) >> s``.
POST = Fields(("bias", BIAS_BITS, True), ("m", M_BITS), ("s", S_BITS), ("mr", M_BITS))
POST_BITS = POST.width


def load_data_bits(plan) -> int:
    """Width of a load word's data field: the widest memory word of ``plan``."""
    return max(plan.weight_word_bits, plan.aux_word_bits, POST_BITS, plan.coef_word_bits)
