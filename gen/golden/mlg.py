"""MLG golden model (algorithms.md section 1): two-level generation from odd codes."""

from __future__ import annotations

import numpy as np

from .common import signed_bits_for

__all__ = ["odd", "mlg_generate", "mlg_bits"]


# --------------------------------------------------------------------------------------------
# MLG two-level generation (algorithms.md section 1)
# --------------------------------------------------------------------------------------------

def odd(code, q: int):
    """Stored unsigned code -> signed odd integer ``2*code - (2**q - 1)``."""
    return 2 * np.asarray(code, dtype=np.int64) - ((1 << q) - 1)


def mlg_generate(Bc, Uc, Vc, qb: int, qu: int, qv: int, Cout: int, Cin: int, K2: int):
    """MLG integer weights ``[Cout, Cin, K2]`` from stored codes (plain einsum / matmul).

    ``Bc``: ``[Bo, Bi, K2]`` (or ``[Bo, Cin*K2]`` when ``Uc`` is None); ``Uc``: ``[Bo, Cin, Bi]``
    or None; ``Vc``: ``[Cout, Bo]`` or None.
    """
    B = odd(Bc, qb)
    if Uc is not None:
        W1 = np.einsum("ocb,obt->oct", odd(Uc, qu), B)
    else:
        W1 = B.reshape(B.shape[0], Cin, K2)
    Bo = W1.shape[0]
    W1 = W1.reshape(Bo, Cin * K2)
    W = odd(Vc, qv) @ W1 if Vc is not None else W1
    return W.reshape(Cout, Cin, K2)


def mlg_bits(Bi: int, Bo: int, qb: int, qu: int, qv: int, level1: bool, level2: bool):
    """Signed widths ``(w1_bits, w_bits)`` of the level-1 and final MLG weights."""
    b = (1 << qb) - 1
    w1 = Bi * ((1 << qu) - 1) * b if level1 else b
    w = Bo * ((1 << qv) - 1) * w1 if level2 else w1
    return signed_bits_for(-w1, w1), signed_bits_for(-w, w)
