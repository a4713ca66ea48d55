"""Golden models: the exact integer arithmetic the hardware must reproduce.

Plain numpy / Python integers, no Amaranth import.  Every model here is written
independently of the RTL's factorisation: the ASM MAC reference multiplies ``x * w``
with an ordinary product, never with the select/shift/add datapath, so a bug in the
hardware's decomposition cannot be mirrored into the reference.

One module per scheme (``docs/quantisation.md``), re-exported here:

* :mod:`.asm`: alphabet sets, representable magnitudes, nearest-representable rounding,
  the per-quartet weight code (:class:`AsmCodeFormat`) and the MAC reference :func:`asm_mac`;
* :mod:`.smartdeal`: the power-of-2 coefficient stream (:class:`SdFormat`) and the rebuild;
* :mod:`.mlg`: two-level generation from odd codes;
* :mod:`.common`: integer-width helpers and the rounding shift.

Overflow of any declared width raises :class:`OverflowError`; nothing wraps silently.
"""

from __future__ import annotations

from .asm import *  # noqa: F403
from .asm import __all__ as _asm
from .common import *  # noqa: F403
from .common import __all__ as _common
from .mlg import *  # noqa: F403
from .mlg import __all__ as _mlg
from .smartdeal import *  # noqa: F403
from .smartdeal import __all__ as _smartdeal

__all__ = [*_common, *_asm, *_smartdeal, *_mlg]
