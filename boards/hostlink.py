"""The layer engine behind a UART frame interpreter (protocol version 2, :mod:`.protocol`).

:class:`HostLink` has only pins (``rx``, ``tx``) and status outputs, so the same component is
the core of every board top and the device under test of the board-level cocotb test.

Receive path: ``IDLE`` takes the command byte, ``HEAD`` the length, ``PAYLOAD`` the arguments
(an ``X`` frame's bytes go straight to the engine), ``CHECK`` the CRC; one CRC-16 register
runs over the whole frame and must end at 0.  A frame that stops for ``timeout_bits`` bit
times is dropped; a wrong length sends the parser to ``DISCARD`` until the line is quiet.
A failed ``X`` frame is run to its end (``DRAIN``: zeros for missing bytes, outputs dropped)
so the engine is idle again before the error is answered.  The ``Y`` answer of an inference
during which the engine raised ``err`` ends with an inverted CRC, so its outputs are never
read as results (the host then reads the status and reports the engine error).  An engine
whose weights stream from a flash checks the whole image's CRC-32 after reset, before its first
inference (``Engine(boot_check=True)``): a bad image keeps ``err`` (the error LED) on until
the next reset, so every inference is answered as an error.

Loads: per memory a word count and a running CRC-32 of the data fields, compared with the
plan's image; ``verified`` is set while every memory matches.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..gen.memmap import MEM_WEIGHT
from ..rtl.crc import CRC16, CRC32, Crc, crc_step
from ..rtl.engine import Engine
from ..rtl.uart import UartRx, UartTx
from ..rtl.weightstream import FLASH_PINS
from . import protocol as P

__all__ = ["HostLink"]


def _byte_const(data: bytes):
    return Const(int.from_bytes(data, "little"), 8 * len(data))


def _c8(ch: str):
    return Const(ord(ch), 8)


class HostLink(wiring.Component):
    """rx : ``In(1)``, tx : ``Out(1)``: the UART pins.  busy, err, uart_err, verified :
    ``Out(1)``: status (for LEDs).  flash : ``Out(FLASH_PINS)``, only when the plan's weight
    memory is a flash (``Plan.weight_flash``): the flash is programmed apart, so the weight
    memory counts as loaded and verified from power-up.  ``divisor``: clock cycles per UART
    bit; ``timeout_bits``: bit times of silence that end a frame."""

    def __init__(self, plan, divisor: int, engine_kwargs: dict | None = None,
                 timeout_bits: int = P.TIMEOUT_BITS, check_frames: bool = True):
        self._plan = plan
        # a board reading its weights from a flash checks the image at power-up
        kwargs = {"counter_bits": 32, "boot_check": bool(plan.weight_flash),
                  **(engine_kwargs or {})}
        self.engine = Engine(plan, **kwargs)
        if self.engine.load_addr_bits > 16:
            raise ValueError(f"memory of {1 << self.engine.load_addr_bits} words is larger "
                             f"than the host protocol's 16-bit address")
        self.divisor, self.timeout_bits = divisor, P.check_frame_timeout(timeout_bits)
        #: False only for the fault bench's control run: frame CRCs are not checked.
        self.check_frames = check_frames
        self.ident = P.ident(plan)
        self.checks = P.memory_checks(plan)
        empty = {MEM_WEIGHT} if kwargs.get("weight_ram") == "huge" else set()
        # Memories the bitstream initialises hold the image at power-up.
        self.preloaded = [m not in empty for m in range(P.N_MEMORIES)]
        #: False when every memory is preloaded (block RAM, flash): the link then has no load
        #: path at all (``L`` is refused with ``A``), its checks are constants.
        self.loadable = not all(self.preloaded)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          "err": Out(1), "uart_err": Out(1), "verified": Out(1),
                          **({"flash": Out(FLASH_PINS)} if plan.weight_flash else {})})

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.submodules.rcrc = rcrc = Crc(CRC16)
        m.submodules.tcrc = tcrc = Crc(CRC16)
        if self._plan.weight_flash:
            wiring.connect(m, eng.flash, wiring.flipped(self.flash))
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(eng.busy),
                     self.err.eq(eng.err), self.uart_err.eq(urx.error)]
        rx, tx = urx.o, utx.i
        took = rx.valid & rx.ready
        n_in, n_out = P.io_sizes(self._plan)
        lb = (eng.load_data_bits + 7) // 8
        assert lb == P.load_bytes(self._plan)
        lengths = {"I": 0, "C": 0, "V": 0, "L": 3 + lb, "X": n_in}
        max_len = max(lengths.values())

        # -- memory checks: word counts and running CRC-32 registers ---------------------------
        # (A memory of no words takes no load: its count and CRC are constants.)
        counts = Array(Signal(16, name=f"words{i}", init=n if pre else 0)
                       if n and self.loadable else Const(n, 16)
                       for i, ((n, _), pre) in enumerate(zip(self.checks, self.preloaded)))
        crcs = Array(Signal(32, name=f"crc{i}", init=(c ^ 0xFFFFFFFF) if pre else CRC32.init)
                     if n and self.loadable else Const((c ^ 0xFFFFFFFF) if n else CRC32.init, 32)
                     for i, ((n, c), pre) in enumerate(zip(self.checks, self.preloaded)))
        match = Cat(*((counts[i] == n) & (crcs[i] == (c ^ 0xFFFFFFFF))
                      for i, (n, c) in enumerate(self.checks)))
        m.d.sync += self.verified.eq(match.all())

        # -- frame state -----------------------------------------------------------------------
        cmd = Signal(8)
        left = Signal(16)                  # the frame's length, then the bytes still to come
        len_bad = Signal()
        len_zero = Signal()
        beyond, same, before = Signal(), Signal(), Signal()
        cnt = Signal(range(max(lb, 2) + 1))   # length and CRC bytes, the load's data bytes
        args = Signal(8 * (3 + lb) if self.loadable else 24)     # a load's mem, addr, data
        mem, addr, data = args[:8], args[8:24], args[24:]
        x_live = Signal()                  # this X frame's payload goes to the engine
        xin = Signal(range(n_in + 1))      # bytes the engine took
        ydone = Signal()                   # DRAIN: the last output was dropped
        ecode = Signal(8)
        mcrc = Signal(32)                  # CRC-32 of the memory being extended
        limit = self.timeout_bits * self.divisor
        quiet = Signal(range(limit + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(quiet == limit)

        # -- answers: a sender of its own, so the next frame arrives while one is answered ----
        # The parser picks the kind (p_kind; ecode for a refusal) and waits in ANSWER until the
        # sender is idle; the sender then latches what it sends (s_kind, s_args, s_err).
        status = Cat(eng.busy, eng.err, urx.error, self.verified, eng.image_bad, Const(0, 3))
        counters = Cat(*(Cat(getattr(eng, n), Const(0, 8 * P.COUNTER_BYTES))[:8 * P.COUNTER_BYTES]
                         for n in P.COUNTERS))
        verify = Cat(*(crcs[i] ^ 0xFFFFFFFF for i in range(P.N_MEMORIES)),
                     self.verified, Const(0, 7))
        s_args = Signal(24)
        s_err = Signal(8)

        def head(code, n):
            return Cat(code, Const(n, 16))
        answers = {
            "I": Cat(head(_c8("I"), P.IDENT_LEN), _byte_const(self.ident)),
            "C": Cat(head(_c8("C"), P.STATUS_LEN), counters, status),
            "V": Cat(head(_c8("V"), P.VERIFY_LEN), verify),
            "K": Cat(head(_c8("K"), 3), s_args),
            "ERR": head(s_err, 0),
            "Y": head(_c8("Y"), 4 * n_out),
        }
        kinds = list(answers)
        p_kind = Signal(range(len(kinds)))
        s_kind = Signal.like(p_kind)
        go = Signal()
        s_idle = Signal()
        idx = Signal(range(max(len(w) // 8 for w in answers.values()) + 1))
        size = Signal.like(idx)
        resp_byte = Signal(8)
        with m.Switch(s_kind):
            for i, k in enumerate(kinds):
                with m.Case(i):
                    m.d.comb += [resp_byte.eq(answers[k].word_select(idx, 8)),
                                 size.eq(len(answers[k]) // 8)]
        drain_ready = Signal()
        send_ready = Signal()
        m.d.comb += eng.o_y.ready.eq(drain_ready | send_ready)

        def answer(kind):
            m.d.sync += p_kind.eq(kinds.index(kind))
            m.next = "ANSWER"

        def refuse(code):
            m.d.sync += ecode.eq(ord(code))
            answer("ERR")

        # -- CRC registers: receive runs over the frame, transmit over the answer -----------------
        receiving = Signal()
        m.d.comb += [rcrc.byte.eq(rx.payload), rcrc.en.eq(took & receiving),
                     rcrc.clear.eq(~receiving),
                     tcrc.clear.eq(s_idle)]

        # Input bytes reach the engine through a one-byte register (the link's state decode
        # and the engine's input logic are separate paths).
        xb = Signal(8)
        xv = Signal()
        m.d.comb += [eng.i_x.payload.eq(xb), eng.i_x.valid.eq(xv)]
        with m.If(xv & eng.i_x.ready):
            m.d.sync += xv.eq(0)

        with m.If(took | ~rx.ready | rx.valid):
            m.d.sync += quiet.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += quiet.eq(quiet + 1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1)]
                m.d.sync += [x_live.eq(0), cnt.eq(0)]
                with m.If(rx.valid):
                    m.d.sync += cmd.eq(rx.payload)
                    m.next = "HEAD"
            with m.State("HEAD"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1)]
                with m.If(took):
                    m.d.sync += [left.eq(Cat(left[8:], rx.payload)), cnt.eq(cnt + 1)]
                    with m.If(cnt == 1):
                        m.next = "LENGTH"
                with m.Elif(timed_out):
                    refuse("T")
            with m.State("LENGTH"):                  # the checks, registered (Fmax)
                m.d.comb += receiving.eq(1)
                bad_len = Signal()
                m.d.comb += bad_len.eq(left > max_len)
                with m.Switch(cmd):
                    for c, n in lengths.items():
                        with m.Case(ord(c)):
                            m.d.comb += bad_len.eq(left != n)
                m.d.sync += [cnt.eq(0), xin.eq(0), x_live.eq((cmd == ord("X")) & self.verified),
                             len_bad.eq(bad_len), len_zero.eq(left == 0)]
                m.next = "ROUTE"
            with m.State("ROUTE"):
                m.d.comb += receiving.eq(1)
                with m.If(len_bad):
                    m.d.sync += ecode.eq(ord("W"))
                    m.next = "DISCARD"
                with m.Elif(len_zero):
                    m.next = "CHECK"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += receiving.eq(1)
                m.d.comb += rx.ready.eq(~(x_live & xv))
                with m.If(took):
                    m.d.sync += [args.eq(Cat(args[8:], rx.payload)), left.eq(left - 1),
                                 xin.eq(xin + x_live)]
                    with m.If(x_live):
                        m.d.sync += [xb.eq(rx.payload), xv.eq(1)]
                    with m.If(left == 1):
                        m.next = "CHECK"
                with m.Elif(timed_out):
                    m.d.sync += ecode.eq(ord("T"))
                    m.next = "DRAIN"
            with m.State("CHECK"):
                m.d.comb += [rx.ready.eq(1), receiving.eq(1)]
                # A load's address checks, registered while the CRC bytes arrive (Fmax):
                # compares with constants per memory, one comparator with the word count.
                if self.loadable:
                    m.d.sync += [beyond.eq((mem >= P.N_MEMORIES) |
                                           Array(addr >= n if n else Const(1)
                                                 for n, _ in self.checks)[mem[:2]]),
                                 same.eq(addr == counts[mem[:2]]),
                                 before.eq(addr < counts[mem[:2]])]
                with m.If(took):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == 1):
                        m.next = "EXEC"
                with m.Elif(timed_out):
                    m.d.sync += ecode.eq(ord("T"))
                    m.next = "DRAIN"
            with m.State("EXEC"):
                m.d.comb += receiving.eq(1)          # rcrc holds the frame's residue
                with m.If((rcrc.value != 0) & self.check_frames):
                    m.d.sync += ecode.eq(ord("R"))
                    m.next = "DRAIN"
                with m.Else():
                    with m.Switch(cmd):
                        for c in "ICV":
                            with m.Case(ord(c)):
                                answer(c)
                        with m.Case(ord("L")):
                            if not self.loadable:
                                refuse("A")          # no memory takes loads
                            else:
                                with m.If(beyond):
                                    refuse("A")
                                with m.Elif((addr == 0) | same):
                                    m.next = "LOAD"
                                with m.Elif(before):
                                    answer("K")      # a repeated frame: already written
                                with m.Else():
                                    refuse("G")
                        with m.Case(ord("X")):
                            with m.If(x_live):
                                answer("Y")
                            with m.Else():
                                refuse("N")
                        with m.Default():
                            refuse("?")
            if self.loadable:                    # (no load path when all is preloaded)
                with m.State("LOAD"):
                    ld = eng.i_load
                    m.d.comb += [ld.payload.mem.eq(mem[:2]), ld.payload.addr.eq(addr),
                                 ld.payload.data.eq(data), ld.valid.eq(1)]
                    with m.If(ld.ready):
                        m.d.sync += [mcrc.eq(Mux(addr == 0, CRC32.init, crcs[mem[:2]])), cnt.eq(0)]
                        m.next = "LOAD_CRC"
                    with m.Else():
                        refuse("E")
                with m.State("LOAD_CRC"):                # one data byte per cycle, shifted out
                    m.d.sync += [mcrc.eq(crc_step(CRC32, mcrc, data[:8])), args[24:].eq(data[8:]),
                                 cnt.eq(cnt + 1)]
                    with m.If(cnt == lb - 1):
                        m.next = "LOAD_DONE"
                with m.State("LOAD_DONE"):
                    with m.Switch(mem[:2]):
                        for i, (n, _) in enumerate(self.checks):
                            if n:
                                with m.Case(i):
                                    m.d.sync += [crcs[i].eq(mcrc), counts[i].eq(addr + 1)]
                    answer("K")
            with m.State("DRAIN"):                   # finish a failed X frame in the engine,
                m.d.comb += [rx.ready.eq(1), drain_ready.eq(1)]   # then refuse (ecode is set)
                with m.If(x_live & (xin != n_in) & ~xv):
                    m.d.sync += [xb.eq(0), xv.eq(1), xin.eq(xin + 1)]
                with m.If(eng.o_y.valid & eng.o_y.payload.last):
                    m.d.sync += ydone.eq(1)
                with m.If(~x_live | ydone):
                    m.d.sync += ydone.eq(0)
                    answer("ERR")
            with m.State("DISCARD"):                 # a wrong length: drop until quiet
                m.d.comb += rx.ready.eq(1)
                with m.If(timed_out):
                    refuse("W")
            with m.State("ANSWER"):
                with m.If(s_idle):
                    m.d.comb += go.eq(1)
                    m.next = "IDLE"

        # The sender fills a one-byte register in front of the UART (so the answer mux and
        # the CRC step are separate paths); ``ocrc`` marks the CRC's own bytes.
        obyte = Signal(8)
        ovalid = Signal()
        ocrc = Signal()
        free = ~ovalid
        m.d.comb += [tx.payload.eq(obyte), tx.valid.eq(ovalid), tcrc.byte.eq(obyte),
                     tcrc.en.eq(ovalid & tx.ready & ~ocrc)]
        with m.If(ovalid & tx.ready):
            m.d.sync += ovalid.eq(0)

        def emit(value, crc=0):
            m.d.sync += [obyte.eq(value), ovalid.eq(1), ocrc.eq(crc), idx.eq(idx + 1)]

        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += s_idle.eq(1)
                with m.If(go):
                    m.d.sync += [s_kind.eq(p_kind), s_args.eq(args[:24]),
                                 s_err.eq(ecode), idx.eq(0)]
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(free):
                    emit(resp_byte)
                    with m.If(idx == size - 1):
                        m.d.sync += idx.eq(0)
                        with m.If(s_kind == kinds.index("Y")):
                            m.next = "Y_SEND"
                        with m.Else():
                            m.next = "SEND_CRC"
            with m.State("Y_SEND"):                  # each output's 4 bytes, straight from
                ov = eng.o_y.payload               # the engine's stream (stable until taken)
                with m.If(free & eng.o_y.valid):
                    emit(ov.value.word_select(idx[:2], 8))
                    with m.If(idx == 3):
                        m.d.comb += send_ready.eq(1)
                        m.d.sync += idx.eq(0)
                        with m.If(ov.last):
                            m.next = "SEND_CRC"
            with m.State("SEND_CRC"):                # high byte first, once the last byte is in
                # outputs of an inference the engine flagged (a weight stream CRC mismatch, an
                # invalid code, a memory conflict) get a spoilt CRC: never taken as results
                spoil = Mux((s_kind == kinds.index("Y")) & eng.err, 0xFFFF, 0)
                crc_out = tcrc.value ^ spoil
                with m.If(free):
                    emit(Mux(idx == 0, crc_out[8:], crc_out[:8]), crc=1)
                    with m.If(idx == 1):
                        m.next = "IDLE"
        return m

