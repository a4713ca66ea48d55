"""The engine's activation memory: every live tensor at its own base address, and the input
loader."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..gen.plan import CPARS

__all__ = ["ActivationMemory"]


class ActivationMemory(wiring.Component):
    """One 8-bit memory holding the network's live tensors (``gen.buffers`` places them).

    The input image is written from ``i_x`` at ``in_base`` while the engine is idle;
    ``loaded`` pulses when its last value is taken.  Layers read through ``rd`` (the
    controller) and ``rr`` (the post-processor's residual) and write through ``wb``, which
    wins over the loader.

    Parameters
    ----------
    depth : int
        Words of the memory (the peak of the live tensors).
    in_size : int
        Values per input image.
    in_base : int
        Address of the input image.
    residual : bool
        Build the residual read port ``rr``.
    cpar : int
        Bytes per word (``Plan.cpar``, 1 by default): channel ``c`` of a tensor is byte ``c %
        cpar`` of word ``base + (c // cpar) * pixels + pixel`` (``gen.buffers``).  ``wb``
        then writes bytes (one enable per byte) and ``rd`` / ``rr`` read whole words.
    in_pixels : int
        Pixels of the input image (``H * W``; only used with ``cpar > 1``).
    window : int
        0, or an odd ``K`` (with ``cpar > 1``): the input has one channel, rows of
        ``in_width`` pixels, and the loader writes each pixel's ``K x K`` window (zeros outside
        the image, also after a reset) as channels ``kh * K + kw`` of a ``K * K``-channel
        tensor (``ceil(K * K / cpar)`` words per pixel, one per cycle), for a first layer run
        as conv1x1 over those channels (``gen.plan.LayerPlan.window``).  It keeps ``K - 1``
        rows in shift registers and writes a pixel's words ``K // 2`` rows and columns after
        taking its value, adding ``K // 2`` zero columns and rows itself.
    in_width : int
        Pixels per input row (with ``window``).
    bank_words : int
        0: one memory.  Otherwise banks of ``bank_words`` words (a power of two), each with
        a single address for its read and write (iCE40 SPRAM, ``ram_style = "huge"``); the
        placement (``gen.buffers``, banked) never lets two ports use one bank in a cycle, and
        ``conflict`` says when they do.  A read port's data holds while it is not enabled.

    Members
    -------
    i_x : ``In(stream.Signature(8))``
        Input activations in ``[C, H, W]`` order; taken only while ``enable`` is high.
    enable : ``In(1)``
    loaded : ``Out(1)``
        The last input value was taken this cycle.
    conflict : ``Out(1)``
        Two ports used one bank this cycle (banked only; never 1 for a placed plan).
    wb : ``Out(WritePort.Signature(addr_width=ceil_log2(depth), shape=8 * cpar, ...))``
        Layer-output write port (``granularity=8`` with ``cpar > 1``).
    rd : ``Out(ReadPort.Signature(addr_width=ceil_log2(depth), shape=8 * cpar))``
        Layer-input read port.
    rr : ``Out(ReadPort.Signature(addr_width=ceil_log2(depth), shape=8 * cpar))``
        Residual read port (only with ``residual``).

    Raises
    ------
    ValueError
        If ``depth`` or ``in_size`` is not a positive integer, ``in_base`` is negative, the
        input does not fit (``in_base + in_size > depth``), ``cpar`` is not in ``gen.plan.CPARS`` or
        is more than 1 with banks.
    """

    def __init__(self, *, depth: int, in_size: int, in_base: int = 0, residual: bool = False,
                 bank_words: int = 0, cpar: int = 1, in_pixels: int = 1, window: int = 0,
                 in_width: int = 1):
        for name, v in (("depth", depth), ("in_size", in_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(in_base, int) or in_base < 0:
            raise ValueError(f"in_base must be a non-negative integer, not {in_base!r}")
        if cpar not in CPARS:
            raise ValueError(f"cpar must be one of {', '.join(map(str, CPARS))}, not {cpar!r}")
        if cpar > 1 and bank_words:
            raise ValueError("a banked activation memory takes one channel per word (cpar 1)")
        if cpar > 1 and (not isinstance(in_pixels, int) or in_pixels < 1 or in_size % in_pixels):
            raise ValueError(f"in_pixels must be a positive divisor of in_size, not {in_pixels!r}")
        if window and (not isinstance(window, int) or window % 2 == 0 or cpar == 1
                       or in_size != in_pixels or not isinstance(in_width, int) or in_width < 1
                       or in_pixels % in_width):
            raise ValueError(f"window must be odd with cpar > 1 ({cpar}), of a "
                             f"one-channel input of rows of in_width pixels, not {window!r} "
                             f"(in_width {in_width!r}, {in_size} values, {in_pixels} pixels)")
        self.window, self.in_width = window, in_width
        chans = window ** 2 if window else in_size // in_pixels
        in_words = -(-chans // cpar) * in_pixels if cpar > 1 else in_size
        if in_base + in_words > depth:
            raise ValueError(f"the input ({in_size} values at {in_base}) must fit depth "
                             f"({depth})")
        self.cpar, self.in_pixels = cpar, in_pixels
        if (not isinstance(bank_words, int) or bank_words < 0
                or bank_words & (bank_words - 1)):
            raise ValueError(f"bank_words must be 0 or a power of two, not {bank_words!r}")
        self.depth, self.in_size, self.in_base = depth, in_size, in_base
        self.bank_words = bank_words
        aw = max(1, ceil_log2(depth))
        wide = {"granularity": 8} if cpar > 1 else {}
        members = {
            "i_x": In(stream.Signature(8)),
            "enable": In(1),
            "loaded": Out(1),
            "conflict": Out(1),
            "wb": Out(WritePort.Signature(addr_width=aw, shape=8 * cpar, **wide)),
            "rd": Out(ReadPort.Signature(addr_width=aw, shape=8 * cpar)),
        }
        if residual:
            members["rr"] = Out(ReadPort.Signature(addr_width=aw, shape=8 * cpar))
        super().__init__(members)

    def elaborate(self, platform):
        if self.cpar > 1:
            return self._elaborate_wide()
        m = Module()
        if self.bank_words:
            wr = _Write(max(1, ceil_log2(self.depth)))
        else:
            m.submodules.act = act = Memory(shape=8, depth=max(2, self.depth), init=[])
            wr = act.write_port()
        in_addr = Signal(range(self.in_base + self.in_size + 1), init=self.in_base)
        m.d.comb += self.i_x.ready.eq(self.enable)
        with m.If(self.i_x.valid & self.enable):
            m.d.comb += [wr.addr.eq(in_addr), wr.data.eq(self.i_x.payload), wr.en.eq(1)]
            with m.If(in_addr == self.in_base + self.in_size - 1):
                m.d.sync += in_addr.eq(self.in_base)
                m.d.comb += self.loaded.eq(1)
            with m.Else():
                m.d.sync += in_addr.eq(in_addr + 1)
        with m.If(self.wb.en):
            m.d.comb += [wr.addr.eq(self.wb.addr), wr.data.eq(self.wb.data), wr.en.eq(1)]
        readers = [self.rd] + ([self.rr] if "rr" in self.signature.members else [])
        if not self.bank_words:
            for user in readers:
                wiring.connect(m, wiring.flipped(user), act.read_port())
            return m
        # Banks: each takes the address of the one port that uses it this cycle (a write
        # first); a reader's data comes from the bank it read last, held while idle.
        lo = ceil_log2(self.bank_words)
        n_banks = -(-self.depth // self.bank_words)
        uses = []
        datas = []
        for k in range(n_banks):
            bank = Memory(shape=8, depth=max(2, self.bank_words), init=[],
                          attrs={"ram_style": "huge"})
            m.submodules[f"bank{k}"] = bank
            rp, wp = bank.read_port(), bank.write_port()
            w_here = wr.en & (wr.addr[lo:] == k)
            r_here = [u.en & (u.addr[lo:] == k) for u in readers]
            sel = wr.addr[:lo]
            for u, here in reversed(list(zip(readers, r_here))):
                sel = Mux(here, u.addr[:lo], sel)
            m.d.comb += [rp.addr.eq(Mux(w_here, wr.addr[:lo], sel)), wp.addr.eq(rp.addr),
                         rp.en.eq(~w_here & sum(r_here).bool()),
                         wp.data.eq(wr.data), wp.en.eq(w_here)]
            uses.append(w_here.as_unsigned() + sum(h.as_unsigned() for h in r_here))
            datas.append(rp.data)
        m.d.comb += self.conflict.eq(Cat(*(u > 1 for u in uses)).any())
        banks = Array(datas)
        for u in readers:
            which = Signal(range(max(2, n_banks)))
            fresh, held = Signal(), Signal(8)
            m.d.sync += fresh.eq(u.en)
            with m.If(u.en):
                m.d.sync += which.eq(u.addr[lo:])
            m.d.comb += u.data.eq(Mux(fresh, banks[which], held))
            m.d.sync += held.eq(u.data)
        return m


    def _elaborate_wide(self):
        """``cpar`` bytes per word, written by the byte loader or the window loader; the
        layer writes win over either."""
        m = Module()
        m.submodules.act = act = Memory(shape=8 * self.cpar, depth=max(2, self.depth), init=[])
        wr = act.write_port(granularity=8)
        for user in [self.rd] + ([self.rr] if "rr" in self.signature.members else []):
            wiring.connect(m, wiring.flipped(user), act.read_port())
        (self._load_windows if self.window else self._load_bytes)(m, wr)
        with m.If(self.wb.en.any()):
            m.d.comb += [wr.addr.eq(self.wb.addr), wr.data.eq(self.wb.data), wr.en.eq(self.wb.en)]
        return m

    def _load_bytes(self, m, wr):
        """The loader walks (channel, pixel) to (word, byte)."""
        P, hw = self.cpar, self.in_pixels
        addr = Signal(range(self.depth + 1), init=self.in_base)        # the word written
        group = Signal.like(addr, init=self.in_base)          # word of the group's pixel 0
        pix = Signal(range(max(2, hw)))
        byte = Signal(range(max(2, P)))
        count = Signal(range(max(2, self.in_size)))
        m.d.comb += self.i_x.ready.eq(self.enable)
        with m.If(self.i_x.valid & self.enable):
            m.d.comb += [wr.addr.eq(addr), wr.data.eq(self.i_x.payload.replicate(P)),
                         wr.en.eq(1 << byte)]
            with m.If(count == self.in_size - 1):
                m.d.sync += [count.eq(0), pix.eq(0), byte.eq(0), addr.eq(self.in_base),
                             group.eq(self.in_base)]
                m.d.comb += self.loaded.eq(1)
            with m.Else():
                m.d.sync += count.eq(count + 1)
                with m.If(pix == hw - 1):
                    m.d.sync += pix.eq(0)
                    with m.If(byte == P - 1):
                        m.d.sync += [byte.eq(0), group.eq(group + hw), addr.eq(group + hw)]
                    with m.Else():
                        m.d.sync += [byte.eq(byte + 1), addr.eq(group)]
                with m.Else():
                    m.d.sync += [pix.eq(pix + 1), addr.eq(addr + 1)]

    def _load_windows(self, m, wr):
        """The loader of ``window``: a stream of ``(H + r) x (W + r)`` values (``r = K // 2``;
        the image, then zeros in its last ``r`` columns and rows) through ``K - 1`` row shift
        registers into a ``K x K`` window, whose centre pixel's words (``ceil(K * K / cpar)``,
        one per cycle, the stream held meanwhile) are written from the next cycle."""
        P, K, W = self.cpar, self.window, self.in_width
        H, r = self.in_pixels // W, self.window // 2
        Hv, Wv = H + r, W + r
        nw = -(-K * K // P)                                 # words per pixel
        y, x = Signal(range(Hv)), Signal(range(Wv))         # the stream's next value
        real = (y < H) & (x < W)
        emit, last = Signal(), Signal()                     # write the centre's words
        word = Signal(range(max(2, nw)))                    # the centre's word written
        busy = emit & (word != nw - 1)                      # more words of it to write
        adv = Signal()
        m.d.comb += [self.i_x.ready.eq(self.enable & real & ~busy),
                     adv.eq(self.enable & ~busy & (~real | self.i_x.valid))]
        value = Mux(real, self.i_x.payload, 0)
        rows = [Signal(8 * Wv, name=f"row{i}") for i in range(K - 1)]   # rows y-1, y-2, ...
        col = [value] + [row[8 * (Wv - 1):] for row in rows]           # column x, rows y, y-1..
        win = [[Signal(8, name=f"win{i}_{j}") for j in range(K)] for i in range(K)]
        addr = Signal(range(self.depth + 1))
        with m.If(adv):
            for i, row in enumerate(rows):
                m.d.sync += row.eq(Cat(col[i], row[:8 * (Wv - 1)]))
            for i in range(K):                  # window row i holds image row y - (K-1) + i
                for j in range(K - 1):
                    m.d.sync += win[i][j].eq(win[i][j + 1])
                m.d.sync += win[i][K - 1].eq(col[K - 1 - i])
            m.d.sync += [emit.eq((y >= r) & (x >= r)), word.eq(0),
                         last.eq((y == Hv - 1) & (x == Wv - 1)),
                         addr.eq(self.in_base + (y - r) * W + (x - r))]
            with m.If(x == Wv - 1):
                m.d.sync += [x.eq(0), y.eq(Mux(y == Hv - 1, 0, y + 1))]
            with m.Else():
                m.d.sync += x.eq(x + 1)
        with m.Elif(busy):
            m.d.sync += [word.eq(word + 1), addr.eq(addr + self.in_pixels)]
        with m.Else():
            m.d.sync += emit.eq(0)
        # The taps outside the image are zeros of the stream: the columns left of column 0
        # wrap to the previous row's zero columns, the rows above row 0 are the previous
        # image's zero rows (or the reset value).  Channel c = i * K + j is byte c % P of the
        # pixel's word c // P.
        taps = [win[i][j] for i in range(K) for j in range(K)]
        taps += [Const(0, 8)] * (nw * P - K * K)
        words = Array(Cat(*taps[q * P:(q + 1) * P]) for q in range(nw))
        with m.If(emit):
            m.d.comb += [wr.addr.eq(addr), wr.data.eq(words[word]), wr.en.eq((1 << P) - 1),
                         self.loaded.eq(last & (word == nw - 1))]


class _Write:
    """The write of a banked memory (address, data, enable), as one signal bundle."""

    def __init__(self, addr_bits: int):
        self.addr, self.data, self.en = Signal(addr_bits), Signal(8), Signal()
