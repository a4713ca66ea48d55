"""The engine's parameter memories: the compact weight images, loadable by the host.

Four ``lib.memory`` memories, one per ``gen.memmap`` id, initialised from the compiled plan
and writable through one load stream while the engine is idle.  Each exposes one read port.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..gen.fields import Fields
from ..gen.memmap import (
    MEM_AUX,
    MEM_COEF,
    MEM_POST,
    MEM_WEIGHT,
    POST_BITS,
    load_data_bits,
)
from .layouts import struct_layout

__all__ = ["WeightMemory", "load_layout", "memory_depths", "load_addr_bits", "post_ports"]

#: Read-port member of each memory id.
PORTS = {MEM_WEIGHT: "w_rd", MEM_AUX: "a_rd", MEM_POST: "p_rd", MEM_COEF: "c_rd"}


def post_ports(n: int) -> list[str]:
    """Names of ``n`` post-memory read ports (``Plan.post_lanes``): ``p_rd``, ``p_rd1``, ...;
    port ``j`` reads the post table from entry ``j`` on (entry ``a + j`` at address ``a``), so
    that the post-processor's lanes read at one address."""
    return [PORTS[MEM_POST]] + [f"{PORTS[MEM_POST]}{j}" for j in range(1, n)]


def load_layout(data_bits: int, addr_bits: int):
    """One word on ``i_load``: which memory, the word address, the data (LSB-aligned)."""
    return struct_layout(Fields(("mem", 2), ("addr", addr_bits), ("data", data_bits)))


def memory_depths(plan) -> dict:
    """Words of each memory (``gen.memmap`` id -> depth, at least 2)."""
    return {MEM_WEIGHT: max(2, len(plan.weight_words)), MEM_AUX: max(2, len(plan.aux_words)),
            MEM_POST: max(2, len(plan.post_words)), MEM_COEF: max(2, len(plan.coef_words))}


def load_addr_bits(plan) -> int:
    """Width of the word address on the load stream (the deepest memory's)."""
    return max(1, (max(memory_depths(plan).values()) - 1).bit_length())


def _widths(plan) -> dict:
    return {MEM_WEIGHT: plan.weight_word_bits, MEM_AUX: plan.aux_word_bits,
            MEM_POST: POST_BITS, MEM_COEF: plan.coef_word_bits}


def _words(plan) -> dict:
    return {MEM_WEIGHT: plan.weight_words, MEM_AUX: plan.aux_words,
            MEM_POST: plan.post_words, MEM_COEF: plan.coef_words}


class WeightMemory(wiring.Component):
    """Weight, aux, post-processing and coefficient memories with the host load port.

    The weight memory has one address for its read and write ports (the reader's address, or
    the load address during a load), so it maps to single-port RAM (iCE40 SPRAM); its read
    is disabled while it is written.

    Parameters
    ----------
    plan : ``gen.plan.Plan``
        The compiled plan: memory images and word widths.
    weight_ram : ``"block"``, ``"huge"`` or ``"flash"``
        ``"huge"`` asks synthesis for the large single-port RAM of the device (iCE40 UP5K
        SPRAM).  Such RAM is not initialised by the bitstream, so the weight memory starts
        empty and the host loads it.  ``"flash"``: no weight memory is built (the engine
        streams it from a flash, ``rtl.weightstream``); its loads are ignored and ``w_rd``
        reads 0.

    Members
    -------
    i_load : ``In(stream.Signature(load_layout(data_bits, addr_bits)))``
        Memory writes; taken only while ``enable`` is high.
    enable : ``In(1)``
        Loads are accepted (the engine is idle).
    w_rd, a_rd, p_rd, c_rd : ``Out(ReadPort.Signature(...))``
        Read ports of the weight, aux, post and coefficient memories; ``p_rd1`` ... more
        post-memory read ports (``Plan.post_lanes > 1``), each from its own copy of the post
        memory (loaded with it).

    Raises
    ------
    ValueError
        If ``weight_ram`` is not ``"block"``, ``"huge"`` or ``"flash"``.
    """

    def __init__(self, plan, *, weight_ram: str = "block"):
        if weight_ram not in ("block", "huge", "flash"):
            raise ValueError(f"weight_ram must be 'block', 'huge' or 'flash', not {weight_ram!r}")
        self._plan, self.weight_ram = plan, weight_ram
        self.depths = memory_depths(plan)
        self.addr_bits = load_addr_bits(plan)
        self.data_bits = load_data_bits(plan)
        widths = _widths(plan)
        members = {"i_load": In(stream.Signature(load_layout(self.data_bits, self.addr_bits))),
                   "enable": In(1)}
        for sel, name in PORTS.items():
            members[name] = Out(ReadPort.Signature(addr_width=ceil_log2(self.depths[sel]),
                                                   shape=widths[sel]))
        for name in post_ports(plan.post_lanes)[1:]:     # the post-processor's other lanes
            members[name] = Out(ReadPort.Signature(
                addr_width=ceil_log2(self.depths[MEM_POST]), shape=POST_BITS))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        huge = self.weight_ram == "huge"
        widths, words = _widths(self._plan), _words(self._plan)
        ld = self.i_load
        m.d.comb += ld.ready.eq(self.enable)
        for sel, name in PORTS.items():
            if sel == MEM_WEIGHT and self.weight_ram == "flash":
                continue                         # the user's w_rd.data stays 0
            mem = Memory(shape=widths[sel], depth=self.depths[sel],
                         # SPRAM has no initial contents: the host loads it
                         init=[] if sel == MEM_WEIGHT and huge else words[sel],
                         attrs={"ram_style": "huge"} if sel == MEM_WEIGHT and huge else None)
            m.submodules[{MEM_WEIGHT: "wmem", MEM_AUX: "amem", MEM_POST: "pmem",
                          MEM_COEF: "cmem"}[sel]] = mem
            rd, wr = mem.read_port(), mem.write_port()
            en = ld.valid & self.enable & (ld.payload.mem == sel)
            m.d.comb += [wr.data.eq(ld.payload.data), wr.en.eq(en)]
            user = getattr(self, name)
            if sel == MEM_WEIGHT:
                m.d.comb += [rd.addr.eq(Mux(en, ld.payload.addr, user.addr)),
                             rd.en.eq(user.en & ~en), wr.addr.eq(rd.addr),
                             user.data.eq(rd.data)]
            else:
                m.d.comb += wr.addr.eq(ld.payload.addr)
                wiring.connect(m, wiring.flipped(user), rd)
            if sel == MEM_POST:
                # One copy per further lane, written together: each a one-read-port memory
                # (a block RAM), not one memory of many read ports (which Yosys builds from
                # distributed RAM and a wide read multiplexer on the ECP5).
                # Copy j holds the table from entry j on (entry e at address e - j), so that
                # every lane reads at one address, with no adder per lane.
                for j, name in enumerate(post_ports(self._plan.post_lanes)[1:], 1):
                    copy = Memory(shape=widths[sel], depth=self.depths[sel],
                                  init=list(words[sel])[j:])
                    m.submodules[f"pmem{j}"] = copy
                    cwr = copy.write_port()
                    m.d.comb += [cwr.data.eq(ld.payload.data),
                                 cwr.en.eq(en & (ld.payload.addr >= j)),
                                 cwr.addr.eq(ld.payload.addr - j)]
                    wiring.connect(m, wiring.flipped(getattr(self, name)), copy.read_port())
        return m
