# amaranth: UnusedElaboratable=no
"""The cycle model (``gen.cycles``) against the engine's own cycle counter, every scheme, a
layer graph with every operation, lanes narrower and wider than its layers."""

import numpy as np
import pytest
from test_engine_graph import graph_net

from insitu.gen import schemes
from insitu.gen.compiler import compile_model
from insitu.gen.cycles import estimate_cycles
from insitu.gen.design import golden_vectors
from insitu.sim.amaranth_tb import run_engine


def _plan(scheme, lanes):
    rng = np.random.default_rng(0)
    return compile_model(graph_net(rng), scheme, lanes=lanes, input_shape=(3, 8, 8),
                         calib=rng.random((16, 3, 8, 8))), rng


@pytest.mark.parametrize("scheme", schemes.NAMES)
@pytest.mark.parametrize("lanes", [3, 16])
def test_model_matches_rtl_within_2_percent(scheme, lanes):
    plan, rng = _plan(scheme, lanes)
    _, counters = run_engine(plan, rng.integers(0, 256, (1, 192)), seed=1)
    rtl = counters[0]["cycles"]
    est = estimate_cycles(plan)
    assert abs(est.cycles - rtl) <= 0.02 * rtl, (est.cycles, rtl)
    assert est.weight_bits == plan.weight_bits_per_inference
    assert sum(c for _, c in est.per_layer) <= est.cycles


def test_weight_port_bandwidth():
    plan, _ = _plan("int8", 8)
    on_chip = estimate_cycles(plan)
    runs = [estimate_cycles(plan, b) for b in (1, 2, 4, 16, 64, 4096)]
    cycles = [r.cycles for r in runs]
    assert cycles == sorted(cycles, reverse=True)            # more bandwidth is never slower
    assert runs[0].limit == "port" and runs[0].cycles > 2 * on_chip.cycles
    # the port is never faster than the generator itself
    assert runs[-1].cycles == on_chip.cycles and runs[-1].limit == "mac"
    with pytest.raises(ValueError, match="positive integer"):
        estimate_cycles(plan, 0)


def test_flash_weight_memory_model():
    """A slower flash is never faster, never faster than on-chip memories, and a slow one
    limits the inference."""
    plan, _ = _plan("int8", 8)
    on_chip = estimate_cycles(plan).cycles
    runs = []
    for mode in ("qspi", "qspi:2", "spi", "spi:4"):
        plan.weight_flash = mode
        runs.append(estimate_cycles(plan))
    plan.weight_flash = ""
    cycles = [r.cycles for r in runs]
    assert cycles == sorted(cycles) and cycles[0] > on_chip
    assert runs[-1].limit == "port"


@pytest.mark.parametrize("scheme", schemes.NAMES)
@pytest.mark.parametrize("port_bits", [1, 5])
def test_weight_port_in_rtl(scheme, port_bits):
    """The engine with a weight link of ``port_bits`` bits per cycle: bit-exact under stalls,
    every bit counted once, and as many cycles as the model says (within 2%)."""
    plan, rng = _plan(scheme, 8)
    plan.weight_port_bits = port_bits
    x = rng.integers(0, 256, (2, 192))
    got, counters = run_engine(plan, x, seed=1, p_gap=0.2, p_stall=0.3)
    assert (got == golden_vectors(plan, x)).all()
    est = estimate_cycles(plan)
    unthrottled = estimate_cycles(plan, 10**6)
    for c in counters:
        assert c["weight_bits"] == plan.weight_bits_per_inference and c["err"] == 0
    rtl = counters[1]["cycles"]
    assert abs(est.cycles - rtl) <= 0.02 * rtl, (est.cycles, rtl)
    assert rtl > unthrottled.cycles                 # the link does slow the engine down
