"""MLG compressor: two-level in situ generation (algorithms.md section 1).

Conv ``W [Cout, Cin, K2]``: cross-kernel ``W = V . W1`` (``V [Cout, Bo]``,
``W1 [Bo, Cin*K2]``) and intra-kernel ``W1[o] = U[o] . Wb[o]`` (``U [Bo, Cin, Bi]``,
``Wb [Bo, Bi, K2]``), each level present only under the rules of algorithms.md 1.1; Linear
layers use the cross-kernel level only.  Initialisation is least squares (truncated SVD) to the
float weights; then each factor is quantised to odd-integer codes with its own width
(qb, qu, qv), refitting the next factor to the already quantised ones (Wb, then U, then V).

Quantiser [design]: the odd grid of ``dorefa_sym`` without the tanh (a post-training
projection, not QAT): ``code = round((x/(2r) + 1/2)(2**q - 1))``, value
``(2 code - (2**q - 1)) r / (2**q - 1)``, ``r`` the least-squares clip level (see
:func:`quantize_odd`).
Real weight = ``mlg_generate(codes) * sB * sU * sV * s_w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .golden import mlg_generate, odd
from .model import Layer


@dataclass(frozen=True)
class MlgConfig:
    Bi: int = 2
    Bo: int = 44
    qb: int = 3
    qu: int = 6
    qv: int = 3

    def __post_init__(self):
        for name in ("Bi", "Bo", "qb", "qu", "qv"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MLG {name} must be a positive integer, not {v!r}")
        for name in ("qb", "qu", "qv"):
            if getattr(self, name) > 16:
                raise ValueError(f"MLG {name} must be at most 16 bits, not {getattr(self, name)}")


@dataclass
class MlgLayer:
    name: str
    kind: str
    shape: tuple
    config: MlgConfig
    Bo: int
    Bi: int
    basis: np.ndarray               # codes [Bo, Bi, K2] or [Bo, Cin*K2]
    coeff_in: np.ndarray | None     # codes [Bo, Cin, Bi]
    coeff_out: np.ndarray | None    # codes [Cout, Bo]
    scale: float                    # real = W_int * scale

    @property
    def level1(self) -> bool:
        return self.coeff_in is not None

    @property
    def level2(self) -> bool:
        return self.coeff_out is not None

    @property
    def k2(self) -> int:
        return 1 if self.kind in ("linear", "conv1x1") else 9

    def weight_int(self) -> np.ndarray:
        c = self.config
        cout, cin = self.shape[0], self.shape[1]
        W = mlg_generate(self.basis, self.coeff_in, self.coeff_out, c.qb, c.qu, c.qv,
                         cout, cin, self.k2)
        return W.reshape(self.shape)

    def weight_float(self) -> np.ndarray:
        return self.weight_int().astype(np.float64) * self.scale

    def tensors(self):
        c = self.config
        out = [("basis", self.basis, c.qb)]
        if self.level1:
            out.append(("coeff_in", self.coeff_in, c.qu))
        if self.level2:
            out.append(("coeff_out", self.coeff_out, c.qv))
        return out

    def image(self) -> dict[str, bytes]:
        """Each code tensor as a little-endian bitstream of q-bit codes (C order), padded to a
        byte; plus the fp32 scale."""
        img = {}
        for name, codes, q in self.tensors():
            acc = 0
            for i, v in enumerate(codes.reshape(-1)):
                acc |= int(v) << (i * q)
            nbytes = -(-codes.size * q // 8)
            img[name] = acc.to_bytes(nbytes, "little")
        img["scale"] = np.float32(self.scale).tobytes()
        return img

    def storage_bits(self) -> dict[str, int]:
        bits = {name: 8 * (-(-codes.size * q // 8)) for name, codes, q in self.tensors()}
        bits["scale"] = 32
        return bits


def quantize_odd(x, q: int):
    """``(codes, step)``: codes in 0..2**q-1 whose odd values times ``step`` approximate x.

    The clip level ``r`` is searched between 0.3 and 1 times ``max|x|`` (``mean|x|`` for q = 1)
    for the least squared error: with few levels, clipping outliers beats a coarse grid.
    """
    x = np.asarray(x, dtype=np.float64)
    levels = (1 << q) - 1
    top = float(np.mean(np.abs(x))) if q == 1 else float(np.max(np.abs(x)))
    if top == 0:
        top = 1.0
    best = None
    for frac in ([1.0] if q == 1 else np.linspace(0.3, 1.0, 15)):
        r = top * frac
        code = np.clip(np.rint((x / (2 * r) + 0.5) * levels), 0, levels).astype(np.int64)
        err = float(np.sum((x - (2 * code - levels) * r / levels) ** 2))
        if best is None or err < best[0]:
            best = (err, code, r / levels)
    return best[1], best[2]


def compress_layer(layer: Layer, cfg: MlgConfig = MlgConfig()) -> MlgLayer:
    w = layer.weight
    cout, cin = w.shape[0], w.shape[1]
    k2 = 1 if layer.kind == "linear" else w.shape[2] * w.shape[3]
    s_w = float(np.max(np.abs(w))) or 1.0
    W = w.reshape(cout, cin * k2) / s_w
    Bo, Bi = cfg.Bo, cfg.Bi
    if k2 == 1 and Bo >= min(cout, cin):
        Bo = max(1, int(0.9 * min(cout, cin)))
    level2 = min(cout, cin * k2) > Bo > 0
    if not level2:
        Bo = cout
    level1 = layer.kind == "conv3x3" and min(cin, k2) > Bi > 0

    # Least-squares initialisation.
    if level2:
        P, S, Q = np.linalg.svd(W, full_matrices=False)
        root = np.sqrt(S[:Bo])
        V = P[:, :Bo] * root
        W1 = root[:, None] * Q[:Bo]
    else:
        V, W1 = None, W
    if level1:
        W1r = W1.reshape(Bo, cin, k2)
        Wb = np.zeros((Bo, Bi, k2))
        for o in range(Bo):
            P, S, Q = np.linalg.svd(W1r[o], full_matrices=False)
            Wb[o] = np.sqrt(S[:Bi])[:, None] * Q[:Bi]
        bc, sB = quantize_odd(Wb, cfg.qb)
        Bq = odd(bc, cfg.qb) * sB
        U = np.stack([W1r[o] @ np.linalg.pinv(Bq[o]) for o in range(Bo)])
        uc, sU = quantize_odd(U, cfg.qu)
        W1q = np.einsum("ocb,obt->oct", odd(uc, cfg.qu) * sU, Bq).reshape(Bo, cin * k2)
    else:
        bc, sB = quantize_odd(W1, cfg.qb)
        uc, sU = None, 1.0
        W1q = odd(bc, cfg.qb) * sB
    if level2:
        V = W @ np.linalg.pinv(W1q)
        vc, sV = quantize_odd(V, cfg.qv)
    else:
        vc, sV = None, 1.0
    return MlgLayer(layer.name, layer.kind, tuple(w.shape), cfg, Bo, Bi if level1 else 0,
                    bc, uc, vc, sB * sU * sV * s_w)
