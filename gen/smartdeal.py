"""SmartDeal compressor: W ~= Ce . B with power-of-2 sparse Ce (algorithms.md section 2).

Per output filter and 64-input-channel chunk, a layer's kernel rows form ``A [R, 3]``
(3x3 conv: row ``ci*3 + kh``, column ``kw``; 1x1 conv and Linear: the weight row zero-padded
to a multiple of 3 and split into chunks of at most 192 rows).  Alternating least squares
(start ``B = I``, ``Ce = A``; project Ce onto sparse powers of 2; solve B; solve Ce; repeat)
gives ``A ~= Ce B``; the last step re-projects Ce and re-solves B.  Each block's B is then
balanced by a power of 2 against its exponents and quantised to int8 with one scale per layer.

Filters of at most 9 weights (depthwise layers, one input channel) share one block's basis
across up to 64 consecutive filters (one ALS problem over their stacked rows); a per-filter
basis would cost 8 bits a weight.

Stored integer codes per block: ``B_int [3, 3]``, ``elemmask/sgn/expu [R, 3]``; rebuilt with
:func:`insitu.gen.golden.sd_rebuild`; real weight ``= W_fix * scale`` with
``scale = sB * 2**e_min * s_w``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .golden import SdFormat, requant_shift, sd_layer_stream, sd_rebuild
from .model import Layer

CHUNK_CH = 64          # input channels per 3x3 chunk
MAX_ROWS = 192         # rows per chunk
MAX_SHARE = 64         # filters of at most 9 weights that share one basis entry


@dataclass(frozen=True)
class SdConfig:
    """Budget knobs.  Thresholds are relative to the layer's max |w|."""
    e_min: int = -8
    e_max: int = 5
    threshold: float = 4e-3           # element threshold on |Ce|
    row_threshold: float = 5.0        # a 3x3 row is zeroed if sum|Ce| < row_threshold*threshold
    prune: float = 0.0                # structured: fraction of rows zeroed per filter group
    group: int = 32                   # filters sharing the structured pattern
    iters: int = 30
    basis_bits: int = 8
    word_bits: int = 32

    def __post_init__(self):
        if not 0 <= self.prune < 1:
            raise ValueError(f"SmartDeal prune must be in [0, 1), not {self.prune!r}")
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"SmartDeal threshold must be a non-negative number, not {self.threshold!r}")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"SmartDeal iters must be a positive integer, not {self.iters!r}")
        if not isinstance(self.basis_bits, int) or not 2 <= self.basis_bits <= 16:
            raise ValueError(f"SmartDeal basis_bits must be an integer in 2..16, not {self.basis_bits!r}")
        SdFormat(self.e_min, self.e_max, self.word_bits)          # validates the range

    @property
    def fmt(self) -> SdFormat:
        return SdFormat(self.e_min, self.e_max, self.word_bits)


@dataclass
class SdLayer:
    """One compressed layer: blocks in (filter, chunk) order."""
    name: str
    kind: str
    shape: tuple
    config: SdConfig
    rows: list[int]                   # rows per chunk (same for every filter)
    basis: np.ndarray                 # int64 [Cout, n_chunks, 3, 3]
    elemmask: np.ndarray              # int64 [Cout, sum(rows), 3]
    sgn: np.ndarray
    expu: np.ndarray
    scale: float                      # real weight = W_fix * scale
    shifts: np.ndarray = field(default=None)   # int8 requant shift per filter
    share: int = 1                    # consecutive filters sharing one basis entry

    @property
    def cout(self) -> int:
        return self.shape[0]

    @property
    def n_chunks(self) -> int:
        return len(self.rows)

    def entry_filters(self) -> list[range]:
        """The filters of each basis entry (one each unless they share: at most 9 weights)."""
        return [range(g, min(self.cout, g + self.share)) for g in range(0, self.cout, self.share)]

    @property
    def n_entries(self) -> int:
        """Basis entries stored: one per (filter group, chunk)."""
        return len(self.entry_filters()) * self.n_chunks

    def block_rows(self, co: int, s: int):
        start = sum(self.rows[:s])
        sl = slice(start, start + self.rows[s])
        return self.elemmask[co, sl], self.sgn[co, sl], self.expu[co, sl]

    def rebuild_rows(self) -> np.ndarray:
        """Exact ``W_fix`` rows ``[Cout, sum(rows), 3]`` (golden rebuild per block)."""
        out = np.zeros_like(self.elemmask)
        start = 0
        for s, r in enumerate(self.rows):
            for co in range(self.cout):
                m, g, e = self.block_rows(co, s)
                out[co, start:start + r] = sd_rebuild(self.basis[co, s], m, g, e)
            start += r
        return out

    def rows_to_weight(self, rows: np.ndarray) -> np.ndarray:
        """Reassemble ``[Cout, sum(rows), 3]`` rows into the layer's weight shape."""
        cout = self.cout
        if self.kind == "conv3x3":
            cin = self.shape[1]
            return rows[:, :cin * 3, :].reshape(cout, cin, 3, 3)
        cin = self.shape[1]
        flat = rows.reshape(cout, -1)[:, :cin]
        return flat.reshape(self.shape)

    def weight_fix(self) -> np.ndarray:
        return self.rows_to_weight(self.rebuild_rows())

    def weight_float(self) -> np.ndarray:
        return self.weight_fix().astype(np.float64) * self.scale

    def weight_int8(self) -> np.ndarray:
        """Mode (b): per-filter rounding shift to int8; real = v * scale * 2**shift."""
        rows = self.rebuild_rows()
        out = np.stack([requant_shift(rows[co], int(self.shifts[co])) for co in range(self.cout)])
        return self.rows_to_weight(out)

    # -- memory image ----------------------------------------------------------------------
    def coef_words(self) -> list[int]:
        """Header word + packed rows, as the power-of-2 decoder reads them."""
        return sd_layer_stream(self.elemmask.reshape(-1, 3), self.sgn.reshape(-1, 3),
                               self.expu.reshape(-1, 3), self.config.fmt)

    def image(self) -> dict[str, bytes]:
        """Packed memory image: coefficient words, int8 bases, per-filter shifts, fp32 scale."""
        words = self.coef_words()
        wb = self.config.word_bits // 8
        bb = -(-self.config.basis_bits // 8)
        return {
            "coef": b"".join(int(w).to_bytes(wb, "little") for w in words),
            "basis": b"".join(int(v).to_bytes(bb, "little", signed=True)
                              for g in self.entry_filters()
                              for v in self.basis[g[0]].reshape(-1)),
            "shift": bytes(int(self.shifts[g[0]]) for g in self.entry_filters()),
            "scale": np.float32(self.scale).tobytes(),
        }

    def storage_bits(self) -> dict[str, int]:
        """Bits stored, counted from the format (equals the image size, see tests)."""
        nnz_rows = int(np.sum(self.elemmask.reshape(-1, 3).any(axis=1)))
        nnz = int(np.sum(self.elemmask))
        rows_total = self.elemmask.shape[0] * self.elemmask.shape[1]
        payload = rows_total + 3 * nnz_rows + nnz * self.config.fmt.code_bits
        wbits = self.config.word_bits
        coef = (1 + max(1, -(-payload // wbits))) * wbits      # header word + payload
        basis = self.n_entries * 9 * 8 * (-(-self.config.basis_bits // 8))
        return {"coef": coef, "basis": basis, "shift": 8 * len(self.entry_filters()),
                "scale": 32}


def _split(layer: Layer) -> tuple[np.ndarray, list[int]]:
    """``A [Cout, sum(rows), 3]`` and rows per chunk."""
    w = layer.weight
    cout = w.shape[0]
    if layer.kind == "conv3x3":
        cin = w.shape[1]
        A = w.reshape(cout, cin * 3, 3)                    # row ci*3 + kh, column kw
        rows = [3 * min(CHUNK_CH, cin - s) for s in range(0, cin, CHUNK_CH)]
        return A, rows
    flat = w.reshape(cout, -1)
    n_total = -(-flat.shape[1] // 3)
    splits = -(-n_total // MAX_ROWS)
    n = -(-n_total // splits)
    padded = np.zeros((cout, splits * n * 3))
    padded[:, :flat.shape[1]] = flat
    return padded.reshape(cout, splits * n, 3), [n] * splits


def _pow2_project(C, cfg: SdConfig, thr: float, keep_rows, row_thr: bool):
    """Sparsify and round to signed powers of 2 within [e_min, e_max] (ties to lower)."""
    a = np.abs(C)
    a = np.where(a < thr, 0.0, a)
    if row_thr:
        a = np.where(a.sum(axis=-1, keepdims=True) < cfg.row_threshold * thr, 0.0, a)
    a = a * keep_rows[..., None]
    nz = a > 0
    safe = np.where(nz, a, 1.0)
    e_hi = np.ceil(np.log2(safe))
    lower = np.exp2(e_hi - 1)
    e = np.where(safe - lower <= np.exp2(e_hi) - safe, e_hi - 1, e_hi)
    nz &= e >= cfg.e_min
    e = np.clip(e, cfg.e_min, cfg.e_max)
    return np.where(nz, np.sign(C) * np.exp2(e), 0.0), nz, e


def _structured_keep(A, rows, cfg: SdConfig):
    """Row keep-mask [Cout, R]: per group of filters, drop the lowest-L1 fraction of rows."""
    keep = np.ones(A.shape[:2])
    if cfg.prune <= 0:
        return keep
    cout = A.shape[0]
    for g0 in range(0, cout, cfg.group):
        norms = np.abs(A[g0:g0 + cfg.group]).sum(axis=(0, 2))
        n_drop = int(cfg.prune * A.shape[1])
        if n_drop:
            keep[g0:g0 + cfg.group, np.argsort(norms, kind="stable")[:n_drop]] = 0
    return keep


def compress_layer(layer: Layer, cfg: SdConfig = SdConfig()) -> SdLayer:
    A_all, rows = _split(layer)
    s_w = float(np.max(np.abs(layer.weight))) or 1.0
    A_all = A_all / s_w
    keep_all = _structured_keep(A_all, rows, cfg)
    row_thr = layer.kind == "conv3x3"
    cout = A_all.shape[0]
    n_chunks = len(rows)
    # A filter of at most 9 weights (depthwise, or one input channel): a 3x3 basis of its
    # own would cost 8 bits a weight, so up to MAX_SHARE consecutive filters share one basis
    # entry (one ALS block).
    share = min(cout, MAX_SHARE) if n_chunks == 1 and rows[0] <= 3 else 1
    starts = np.cumsum([0] + rows[:-1])
    # Blocks: (filter, chunk) segments stacked, zero-padded to the longest; padded rows
    # are kept at zero.
    segments = [[(co, s) for co in range(g, min(cout, g + share))]
                for g in range(0, cout, share) for s in range(n_chunks)]
    nb = len(segments)
    R = max(sum(rows[s] for _, s in seg) for seg in segments)
    A = np.zeros((nb, R, 3))
    keep = np.zeros((nb, R))
    for b, seg in enumerate(segments):
        at = 0
        for co, s in seg:
            st, r = starts[s], rows[s]
            A[b, at:at + r] = A_all[co, st:st + r]
            keep[b, at:at + r] = keep_all[co, st:st + r]
            at += r

    pinv = np.linalg.pinv
    C = A.copy()
    B = np.tile(np.eye(3), (nb, 1, 1))
    for _ in range(cfg.iters):
        Cq, _, _ = _pow2_project(C, cfg, cfg.threshold, keep, row_thr)
        B = pinv(Cq) @ A
        C_new = A @ pinv(B)
        if np.allclose(C_new, C, atol=1e-9):
            C = C_new
            break
        C = C_new
    Cq, nz, e = _pow2_project(C, cfg, cfg.threshold, keep, row_thr)
    B = pinv(Cq) @ A

    # Balance each block by 2**k (Cq * 2**-k)(B * 2**k), keeping exponents in range, so
    # the per-layer int8 scale serves every block well.
    lo_e = np.where(nz, e, np.inf).reshape(nb, -1).min(axis=1)
    hi_e = np.where(nz, e, -np.inf).reshape(nb, -1).max(axis=1)
    m_b = np.max(np.abs(B).reshape(nb, -1), axis=1)
    empty = ~nz.reshape(nb, -1).any(axis=1) | (m_b == 0)
    k = np.floor(-np.log2(np.where(m_b > 0, m_b, 1.0)))
    k = np.minimum(k, np.where(empty, 0, lo_e - cfg.e_min))
    k = np.maximum(k, np.where(empty, 0, hi_e - cfg.e_max))
    k = np.where(empty, 0, k).astype(np.int64)
    B = B * np.exp2(k)[:, None, None]
    e = np.where(nz, e - k[:, None, None], 0)
    qmax = (1 << (cfg.basis_bits - 1)) - 1
    sB = float(np.max(np.abs(B))) / qmax or 1.0
    B_int = np.clip(np.rint(B / sB), -qmax, qmax).astype(np.int64)
    B_int[empty] = 0

    expu = np.where(nz, e - cfg.e_min, 0).astype(np.int64)
    sgn = (nz & (C < 0)).astype(np.int64)
    mask = nz.astype(np.int64)

    def unblock(x):
        out = np.zeros((cout, sum(rows), 3), dtype=np.int64)
        for b, seg in enumerate(segments):
            at = 0
            for co, s in seg:
                st, r = starts[s], rows[s]
                out[co, st:st + r] = x[b, at:at + r]
                at += r
        return out

    basis = np.zeros((cout, n_chunks, 3, 3), dtype=np.int64)      # each filter's entry
    for b, seg in enumerate(segments):
        for co, s in seg:
            basis[co, s] = B_int[b].reshape(3, 3)
    sd = SdLayer(layer.name, layer.kind, tuple(layer.weight.shape), cfg, list(rows),
                 basis, unblock(mask), unblock(sgn), unblock(expu),
                 sB * 2.0 ** cfg.e_min * s_w, share=share)
    rebuilt = sd.rebuild_rows()
    shifts = []
    for co in range(cout):
        peak = int(np.max(np.abs(rebuilt[co]))) if rebuilt[co].size else 0
        s = 0
        while (peak + ((1 << (s - 1)) if s else 0)) >> s > 127:
            s += 1
        shifts.append(s)
    # one shift per basis entry: the largest its filters need
    sd.shifts = np.array([max(shifts[co] for co in g) for g in sd.entry_filters()
                          for co in g], dtype=np.int64)
    return sd
