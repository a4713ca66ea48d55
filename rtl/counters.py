"""The engine's performance counters and sticky error flag."""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Counters"]

#: Counter members, in the order the host protocol reads them.
NAMES = ("cycles", "issue_cycles", "mac_terms", "mac_slots", "weight_bits")


class Counters(wiring.Component):
    """Cycle, issue, MAC and weight-traffic counters of one inference.

    All counters and ``err`` clear when an inference starts, count while it runs and hold
    their values after it.

    Parameters
    ----------
    lanes : int
        MAC lanes (width of ``lanes``).
    counter_bits : int
        Width of each counter, 16..64.

    Members
    -------
    start, running : ``In(1)``
        An inference starts (one cycle) / is running.
    issuing : ``In(1)``
        The controller is in its issue phase (counts ``issue_cycles``).
    mac_fire : ``In(1)``
        A term entered the MAC array; ``lanes`` of its lanes are in use (``mac_slots``).
    lanes : ``In(range(lanes + 1))``
    wbits : ``In(16)``
        Weight-memory bits read this cycle.
    err_now : ``In(1)``
        A bad code or overrun was seen this cycle.
    cycles, issue_cycles, mac_terms, mac_slots, weight_bits : ``Out(counter_bits)``
    err : ``Out(1)``
        Sticky until the next start.

    Raises
    ------
    ValueError
        If ``lanes`` is not a positive integer, or ``counter_bits`` is not an integer in 16..64.
    """

    def __init__(self, *, lanes: int, counter_bits: int = 48):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        if not isinstance(counter_bits, int) or isinstance(counter_bits, bool) or not 16 <= counter_bits <= 64:
            raise ValueError(f"counter_bits must be an integer in 16..64, not {counter_bits!r}")
        super().__init__({
            "start": In(1), "running": In(1), "issuing": In(1), "mac_fire": In(1),
            "lanes": In(range(lanes + 1)), "wbits": In(16), "err_now": In(1),
            **{name: Out(counter_bits) for name in NAMES},
            "err": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        with m.If(self.start):
            m.d.sync += [getattr(self, name).eq(0) for name in NAMES]
            m.d.sync += self.err.eq(0)
        with m.Elif(self.running):
            m.d.sync += [
                self.cycles.eq(self.cycles + 1),
                self.issue_cycles.eq(self.issue_cycles + self.issuing),
                self.mac_terms.eq(self.mac_terms + self.mac_fire),
                self.mac_slots.eq(self.mac_slots + Mux(self.mac_fire, self.lanes, 0)),
                self.weight_bits.eq(self.weight_bits + self.wbits),
            ]
            with m.If(self.err_now):
                m.d.sync += self.err.eq(1)
        return m
