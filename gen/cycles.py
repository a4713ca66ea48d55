"""The engine's cycle model: cycles per inference from the plan alone, with an optional
weight-port bandwidth.

The engine (``rtl/engine.py``) runs the tiles of every layer in order.  The tile fill builds
tile ``k + 1`` into one slot of the double-buffered tile buffer while the MAC array issues
tile ``k`` from the other, so per tile::

    fill_end[k]  = max(fill_end[k-1], issue_end[k-2]) + fill[k]       (its slot is free)
    issue_start  = max(issue_end[k-1] (+ the layer switch), fill_end[k])
    issue_end[k] = issue_start + issue[k]

* ``issue[k]``: one step (``Plan.cpar`` input channels of one kernel position) per cycle,
  ``pixels x steps``; the post-processor takes ``Plan.post_lanes`` lanes per cycle, so a
  pixel costs at least ``ceil(lanes / post_lanes) + 1`` cycles.  Depthwise layers and pools
  run lane-serially (``lanes x pixels x steps``; with ``cpar > 1`` in groups of ``cpar``
  lanes, a group's pixel costing at least its post-processor cycles + 1); pools need no
  tile.
* ``fill[k]``: the scheme's fill cycles (``Scheme.tile_costs``), or, with a weight port of
  ``port_bits`` bits per cycle, at least ``ceil(bits / port_bits)`` per phase of the fill
  (``Scheme.tile_phases``: MLG's cache load reads a burst before it generates): the weight
  words stream in from outside (flash) and nothing is kept on chip between inferences.
* With a flash weight memory (``Plan.weight_flash``, ``gen.flashimage``), each tile's words
  of the weight stream arrive at the flash's bits per cycle; the stream starts with the read
  command (``COMMAND_CLOCKS`` flash clocks) and runs ahead of the fill by about one word.
* A layer switch waits for the previous layer's results to be written back (``SWITCH``
  cycles and the post-processor's cycles of its last word; one more with ``cpar > 1``,
  whose MAC array sums a term's products in one more stage).

Each tile is also labelled with what limits it: ``mac`` (issue), ``fill`` (the generator)
or ``port`` (the weight port's bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import schemes
from .flashimage import COMMAND_CLOCKS, flash_bits_per_cycle, parse_flash, word_bytes
from .plan import mac_stages

__all__ = ["CycleEstimate", "estimate_cycles", "port_capacity", "SWITCH", "START"]

#: Cycles of a layer switch beyond ``lanes`` (MAC + post-processor pipeline drain).
SWITCH = 12
#: Cycles from the last input to the first fill, and from the last issue to the last output.
START = 2


def port_capacity(plan, port_bits: int) -> int:
    """Bits the weight port's buffer holds (``rtl.weightport``): one word of each memory
    (the most the fill takes in one cycle) plus one cycle's delivery."""
    return port_bits + plan.weight_word_bits + plan.aux_word_bits + plan.coef_word_bits


@dataclass
class CycleEstimate:
    """The cycle model's answer for one plan and weight port."""
    cycles: int
    issue_cycles: int                 # cycles the MAC array is issuing terms
    port_bits: int | None             # weight-port bits per cycle (None: on-chip memories)
    weight_bits: int                  # weight-memory bits read per inference
    bound_cycles: dict = field(default_factory=dict)   # issue cycles by what limits each tile
    per_layer: list = field(default_factory=list)      # (name, cycles) per layer

    @property
    def limit(self) -> str:
        """What limits the inference as a whole: the label with the most cycles."""
        return max(self.bound_cycles, key=self.bound_cycles.get) if self.bound_cycles else "mac"

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "issue_cycles": self.issue_cycles,
                "port_bits": self.port_bits, "weight_bits": self.weight_bits,
                "limit": self.limit, "bound_cycles": dict(self.bound_cycles),
                "per_layer": [list(p) for p in self.per_layer]}


def _post(plan, lanes: int, last: bool = False) -> int:
    """Cycles the post-processor takes for a result word of ``lanes`` values (the final
    layer's values leave the engine one per cycle: at least ``lanes - 1``)."""
    return max(-(-lanes // plan.post_lanes), lanes - 1 if last else 0)


def _issue(plan, ly, lanes: int, last: bool = False) -> int:
    pixels = ly.oh * ly.ow
    if ly.depthwise and plan.cpar > 1:
        # groups of cpar lanes side by side; the post-processor takes a group's lanes
        P = plan.cpar
        return sum(pixels * max(ly.steps, _post(plan, min(P, lanes - g), last) + 1)
                   for g in range(0, lanes, P))
    if ly.depthwise:
        return lanes * pixels * ly.steps
    return pixels * max(ly.steps, _post(plan, lanes, last) + 1)


def estimate_cycles(plan, port_bits: int | None = None) -> CycleEstimate:
    """Cycles of one inference of ``plan`` (see the module docstring).  ``port_bits``: the
    weight port's bits per cycle (a positive integer), or None for the plan's own
    (``Plan.weight_port_bits``; 0 there: on-chip memories read at once, or the plan's flash
    weight memory, ``Plan.weight_flash``)."""
    flash = None
    if port_bits is None:
        port_bits = plan.weight_port_bits or None
        flash = plan.weight_flash or None
    if port_bits is not None and (not isinstance(port_bits, int) or isinstance(port_bits, bool)
                                  or port_bits < 1):
        raise ValueError(f"Weight-port bits per cycle must be a positive integer, not {port_bits!r}")
    scheme = schemes.get(plan.scheme)
    extra = mac_stages(scheme.mac, plan.lanes, plan.cpar)       # MAC latency beyond 3
    L = plan.lanes
    # The fill runs ahead through the tiles of every weighted layer in order.
    tiles = []                        # (lanes, fill cycles, bits) of every weighted tile
    for ly in plan.weighted:
        for tk, (fc, bits) in enumerate(scheme.tile_costs(plan, ly)):
            tiles.append((min(L, ly.cout - tk * L), fc + 2, bits))
    phases = [ph for ly in plan.weighted for ph in scheme.tile_phases(plan, ly)]
    cap = port_capacity(plan, port_bits) if port_bits is not None else 0
    if flash:
        rate = flash_bits_per_cycle(flash)
        nb = word_bytes(plan)
        cap = 8 * nb + 16             # one word waiting, two bytes in the reader
        latency = COMMAND_CLOCKS * 2 * parse_flash(flash)[1] + 4

    def fill_time(k, idle):
        """Cycles of tile k's fill; the port's buffer filled up while the fill was idle."""
        gen = tiles[k][1]
        if flash:               # the flash streams the weight words, whole bytes each
            per_cycle, head = rate, (min(cap, rate * idle) if k else -rate * latency)
            loads = [(cycles, 8 * nb * words) for cycles, _, words in phases[k]]
        elif port_bits is not None:
            per_cycle, head = port_bits, min(cap, port_bits * idle)
            loads = [(cycles, bits) for cycles, bits, _ in phases[k]]
        else:
            return gen, gen
        if not any(bits for _, bits in loads):
            return gen, gen
        need = 2
        for cycles, bits in loads:              # each phase at its own pace, in order
            need += max(cycles, int(-(-max(0, bits - head) // per_cycle)))
            head = max(0, head - bits)
        return max(gen, need), gen
    fill_end = []                     # per weighted tile
    issue_end = []                    # per weighted tile
    t = START
    issue_total = 0
    bound = {"mac": 0, "fill": 0, "port": 0}
    per_layer = []
    k = 0
    for i, ly in enumerate(plan.layers):
        t_layer = t
        last = i == len(plan.layers) - 1
        if ly.pool:
            lanes_all = ly.cout
            for tk in range(ly.tiles):
                n = _issue(plan, ly, min(L, lanes_all - tk * L), last)
                t += n
                issue_total += n
                bound["mac"] += n
        else:
            for tk in range(ly.tiles):
                lanes = tiles[k][0]
                free = issue_end[k - 2] if k >= 2 else START
                prev = fill_end[k - 1] if k else START
                start_fill = max(prev, free)
                # before the first tile the port had the whole input transfer to fill up
                need, gen = fill_time(k, start_fill - prev if k else cap)
                fill_end.append(start_fill + need)
                n = _issue(plan, ly, lanes, last)
                begin = max(t, fill_end[k])
                wait = begin - t
                if wait > 0:
                    label = "port" if (port_bits is not None or flash) and need > gen else "fill"
                    bound[label] += wait
                bound["mac"] += n
                t = begin + n
                issue_end.append(t)
                issue_total += n
                k += 1
        drain = min(L, ly.last_tile_lanes(L))
        if ly.depthwise:
            drain = min(plan.cpar, drain) if plan.cpar > 1 else 1
        drain = _post(plan, drain, last)
        t += (START if last else SWITCH) + drain + extra
        per_layer.append((ly.name, t - t_layer))
    bits = sum(b for _, _, b in tiles)
    return CycleEstimate(cycles=t, issue_cycles=issue_total, port_bits=port_bits,
                         weight_bits=bits, bound_cycles=bound, per_layer=per_layer)
