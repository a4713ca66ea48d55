"""Power-of-2 sparse decoder: packed SmartDeal coefficient words in, one kernel row out per cycle.

Input: the layer's coefficient stream as ``word_bits`` words, as laid out by
``gen.golden.SdFormat`` with a one-word header in front: the number of rows ``n`` that follow.
Output: per kernel row the element mask, signs and biased exponents (``e = expu + e_min``):
the shift / sign / select controls of the rebuild engine.  Golden model:
``gen.golden.sd_unpack``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..gen.golden import SdFormat

__all__ = ["pow2_row_layout", "Pow2Decoder", "Pow2RowDecode"]


def pow2_row_layout(fmt: SdFormat) -> data.StructLayout:
    """One decoded kernel row (shared with the weight generator and the testbenches)."""
    return data.StructLayout({
        "mask": 3,                                   # bit j: coefficient j is nonzero
        "sign": 3,                                   # bit j: coefficient j is negative
        "expu": data.ArrayLayout(fmt.exp_bits, 3),   # biased exponent, e = expu + e_min
        "err": 1,                                    # an exponent code was out of range
        "last": 1,                                   # final row of the layer
    })


class Pow2Decoder(wiring.Component):
    """Decode a packed power-of-2 sparse coefficient stream into kernel-row controls.

    Stream layout (``gen.golden.SdFormat``): a header word holding the row count ``n``, then
    the rows as a little-endian bitstream, each ``nz`` (1 bit) and, when set, ``mask`` (3 bits)
    and per nonzero element ``sign | expu``, padded to a whole word.  After the ``n``-th row
    (flagged ``last``) the rest of its word is dropped and the next word is the next
    layer's header.  A header of 0 is an empty layer.

    An exponent code above ``e_max - e_min`` sets ``err`` on its row and that element is
    output as zero (mask bit clear): it is never used as a weight.

    Timing: one row per cycle in steady state with ``i.valid`` high, empty rows included,
    because a row takes at most ``SdFormat.max_row_bits`` <= ``word_bits`` bits and a word
    arrives whenever the two-word bit buffer has room.  Output is registered (latency 1
    from the cycle the row's last word is in the buffer).

    Parameters
    ----------
    e_min, e_max : int
        Exponent range.
    word_bits : int
        Memory word width, a power of 2 >= ``max_row_bits``.

    Members
    -------
    i : ``In(stream.Signature(word_bits))``
    o : ``Out(stream.Signature(pow2_row_layout(fmt)))``
    """

    def __init__(self, *, e_min=-8, e_max=5, word_bits=32):
        self._fmt = fmt = self.validate(e_min=e_min, e_max=e_max, word_bits=word_bits)
        super().__init__({
            "i": In(stream.Signature(word_bits)),
            "o": Out(stream.Signature(pow2_row_layout(fmt))),
        })

    @staticmethod
    def validate(*, e_min=-8, e_max=5, word_bits=32) -> SdFormat:
        """Check parameters without building anything (one-sentence errors)."""
        fmt = SdFormat(e_min, e_max, word_bits)
        if word_bits & (word_bits - 1):
            raise ValueError(f"Word bits must be a power of 2, not {word_bits!r}")
        return fmt

    fmt = property(lambda self: self._fmt, doc="The golden stream format.")

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        W = fmt.word_bits

        buf = Signal(2 * W)
        count = Signal(range(2 * W + 1))          # valid bits in buf, from bit 0
        phase = Signal(exact_log2(W))             # bit position within the current word
        rows_left = Signal(W)
        in_rows = Signal()                        # 0: expecting a header word

        # Row decode at the head of the buffer.
        m.submodules.row = row = Pow2RowDecode(fmt)
        m.d.comb += row.bits.eq(buf[:fmt.max_row_bits])
        need = row.need
        is_last = rows_left == 1
        # After the last row, drop the rest of its word.
        end = Signal(range(W + fmt.max_row_bits + 1))
        m.d.comb += end.eq(phase + need)
        pad = Signal(range(W))
        m.d.comb += pad.eq(-end)                  # (W - end % W) % W, W a power of 2

        take = Signal(range(2 * W + 1))
        row_fire = Signal()
        can_out = ~self.o.valid | self.o.ready
        with m.If(in_rows):
            m.d.comb += row_fire.eq(can_out & (count >= need))
            with m.If(row_fire):
                m.d.comb += take.eq(Mux(is_last, need + pad, need))
        with m.Else():
            with m.If(count >= W):
                m.d.comb += take.eq(W)

        # Refill: append a whole word when it fits behind what remains.
        rem = Signal(range(2 * W + 1))
        m.d.comb += rem.eq(count - take)
        room = rem <= W
        m.d.comb += self.i.ready.eq(room)
        fill = self.i.valid & room
        m.d.sync += [
            buf.eq((buf >> take) | Mux(fill, self.i.payload << rem, 0)),
            count.eq(rem + Mux(fill, W, 0)),
        ]

        # Header / row bookkeeping.
        with m.If(~in_rows & (count >= W)):
            hdr = buf[:W]
            m.d.sync += [rows_left.eq(hdr), in_rows.eq(hdr != 0), phase.eq(0)]
        with m.If(row_fire):
            m.d.sync += [rows_left.eq(rows_left - 1), phase.eq(end)]
            with m.If(is_last):
                m.d.sync += in_rows.eq(0)

        # Registered output.
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(row_fire):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(row.row),
                         self.o.payload.last.eq(is_last)]
        return m


class Pow2RowDecode(wiring.Component):
    """Combinational decode of one kernel row from the head of the bitstream.

    ``bits`` holds the next ``max_row_bits`` stream bits (bit 0 first).  Outputs the row's
    controls (``last`` left 0) and ``need``, the row's length in bits: 1 for an empty row,
    else ``4 + popcount(mask) * (1 + exp_bits)``.  Out-of-range exponents set ``err`` and are
    output as zero.  Proven equal to its definition in ``insitu.sim.formal``.
    """

    def __init__(self, fmt: SdFormat):
        self._fmt = fmt
        super().__init__({
            "bits": In(fmt.max_row_bits),
            "row": Out(pow2_row_layout(fmt)),
            "need": Out(range(fmt.max_row_bits + 1)),
        })

    fmt = property(lambda self: self._fmt)

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        CB, EB = fmt.code_bits, fmt.exp_bits
        bits = self.bits
        nz = bits[0]
        mask = bits[1:4]
        # Element j's code follows the codes of the set mask bits below it.
        # (Muxes, not products: no multiplier, and no DSP inferred for it.)
        cb = [Mux(mask[j], CB, 0) for j in range(3)]
        offs = [4, 4 + cb[0], 4 + cb[0] + cb[1]]
        code = [Signal(CB, name=f"code{j}") for j in range(3)]
        for j in range(3):
            m.d.comb += code[j].eq(bits.bit_select(offs[j], CB))
        m.d.comb += self.need.eq(Mux(nz, 4 + cb[0] + cb[1] + cb[2], 1))
        bad = Signal(3)
        if fmt.expu_max < (1 << EB) - 1:          # otherwise every exponent code is valid
            for j in range(3):
                m.d.comb += bad[j].eq(nz & mask[j] & (code[j][1:] > fmt.expu_max))
        p = self.row
        m.d.comb += [p.mask.eq(Mux(nz, mask & ~bad, 0)), p.err.eq(bad.any())]
        for j in range(3):
            ok = nz & mask[j] & ~bad[j]
            m.d.comb += [p.sign[j].eq(ok & code[j][0]), p.expu[j].eq(Mux(ok, code[j][1:1 + EB], 0))]
        return m
