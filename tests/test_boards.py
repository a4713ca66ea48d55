# amaranth: UnusedElaboratable=no
"""Board tops: UART, host protocol, PLL settings, the board-level cocotb test through the UART
pins, the host driver against a board model, and the synth command's errors."""


import dataclasses
import struct
import zlib

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_engine import extreme_inputs, small_net

import insitu.cli as cli
from insitu.boards import protocol as P
from insitu.boards.fpga import BOARDS, DEVICES, FAMILIES
from insitu.boards.host import Board, run_board
from insitu.boards.hostlink import HostLink
from insitu.boards.top import BoardTop, board_platform, place_memories
from insitu.gen.compiler import compile_model
from insitu.gen.design import golden_vectors, load_plan
from insitu.gen.flashimage import flash_image
from insitu.rtl.emit import write_design
from insitu.rtl.uart import UartRx, UartTx


def small_plan(scheme="asm", lanes=3):
    rng = np.random.default_rng(3)
    return compile_model(small_net(rng), scheme, lanes=lanes, input_shape=(2, 5, 5)), rng


# -- UART ------------------------------------------------------------------------------------
def _uart_loop(data, divisor, glitch=False, bad_stop=False):
    """Bytes through UartTx -> pin -> UartRx; returns (received, rx error)."""
    from amaranth.hdl import Module
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    got, err = [], []
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def line(ctx):
        if glitch:                                   # a 1-cycle low pulse is not a start bit
            ctx.set(rx.rx, 0)
            await ctx.tick()
            ctx.set(rx.rx, 1)
            await ctx.tick().repeat(divisor * 2)
        if bad_stop:                                 # a byte whose stop bit is low
            for bit in [0] + [1, 0] * 4 + [0]:
                ctx.set(rx.rx, bit)
                await ctx.tick().repeat(divisor)
            ctx.set(rx.rx, 1)
            await ctx.tick().repeat(divisor * 2)
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
        await ctx.tick().repeat(divisor * 12)
        err.append(ctx.get(rx.error))

    async def wire(ctx):
        async for (v,) in ctx.changed(tx.tx):
            ctx.set(rx.rx, v)

    async def sink(ctx):
        ctx.set(rx.o.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(rx.o.valid, rx.o.payload):
            if valid:
                got.append(payload)

    sim.add_testbench(line)
    if not glitch and not bad_stop:
        sim.add_process(wire)
    sim.add_testbench(sink, background=True)
    sim.run()
    return got, bool(err and err[0])


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_uart_loopback_all_byte_values(divisor):
    data = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80] + list(range(2, 256, 37))
    got, err = _uart_loop(data, divisor)
    assert got == data and not err


def test_uart_rx_ignores_glitch_and_flags_bad_stop_bit():
    got, err = _uart_loop([], 8, glitch=True)
    assert got == [] and not err
    got, err = _uart_loop([], 8, bad_stop=True)
    assert got == [] and err


def test_uart_divisor_checked():
    with pytest.raises(ValueError, match="UART divisor"):
        UartRx(3)


def _link_answers(timeout_bits, pause_bits, divisor=4):
    """An ``I`` frame into the host link's rx pin with a pause of ``pause_bits`` bit times
    after its second byte; the frames the link answers (Amaranth simulator)."""
    from insitu.sim.board_sim import link_test_plan
    link = HostLink(link_test_plan("asm", lanes=2), divisor, {"weight_ram": "block"},
                    timeout_bits=timeout_bits)
    sim = Simulator(link)
    sim.add_clock(1e-8)
    trace = []

    async def host(ctx):
        for i, b in enumerate(P.frame("I")):
            if i == 2:
                await ctx.tick().repeat(divisor * pause_bits)
            for bit in [0] + [(b >> k) & 1 for k in range(8)] + [1]:
                ctx.set(link.rx, bit)
                await ctx.tick().repeat(divisor)
        await ctx.tick().repeat(divisor * 10 * (8 + P.IDENT_LEN))

    async def line(ctx):                          # the tx pin, one sample per cycle
        async for _, _, tx in ctx.tick().sample(link.tx):
            trace.append(tx)

    sim.add_testbench(host)
    sim.add_testbench(line, background=True)
    sim.run()
    got, t = bytearray(), 0
    while True:                                   # UART bytes, sampled mid-bit
        try:
            t = trace.index(0, t)
        except ValueError:
            return bytes(got)
        bits = [trace[t + divisor // 2 + divisor * k] for k in range(1, 9)]
        got.append(sum(b << k for k, b in enumerate(bits)))
        t += divisor * 10 - divisor // 2


def test_frame_timeout_is_a_build_parameter():
    """``synth --frame-timeout``: a pause of 40 bit times inside a frame drops it (``T``) on a
    link built with a 16-bit-time timeout and is only a pause on one built with 200."""
    short = _link_answers(16, 40)
    assert P.parse_frame(short[:5]) == ("T", b"")
    long = _link_answers(200, 40)
    code, payload = P.parse_frame(long)
    assert code == "I" and len(payload) == P.IDENT_LEN
    assert P.resync_seconds(64, 115200) == 0.02 and P.resync_seconds(4096, 115200) > 0.07


# -- PLL settings (checked against yowasp-icepll / yowasp-ecppll outputs) ----------------------
def test_pll_settings_match_vendor_tools():
    ice40_pll, ecp5_pll = FAMILIES["ice40"].pll, FAMILIES["ecp5"].pll
    assert {k: ice40_pll(12, 36)[k] for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")} == \
        {"DIVR": 0, "DIVF": 47, "DIVQ": 4, "FILTER_RANGE": 1}
    assert {k: ice40_pll(12, 24)[k] for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")} == \
        {"DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1}
    p = ecp5_pll(25, 50)
    assert (p["CLKI_DIV"], p["CLKFB_DIV"], p["CLKOP_DIV"], p["vco_mhz"]) == (1, 2, 12, 600)
    for f in (18, 30, 42.5):
        assert abs(ice40_pll(12, f)["mhz"] - f) / f < 0.02
        assert abs(ecp5_pll(25, f)["mhz"] - f) / f < 0.02


def test_board_top_checks():
    plan, _ = small_plan()
    with pytest.raises(ValueError, match="Unknown board 'de0'"):
        BoardTop(plan, "de0")
    with pytest.raises(ValueError, match="baud rate 1300000 is not reachable"):
        BoardTop(plan, "icebreaker", clock_mhz=12, baud=1_300_000)
    for bad in (7, 1 << 21, 64.0, True):
        with pytest.raises(ValueError, match=r"^frame timeout must be 8\.\.1048576 bit times"):
            BoardTop(plan, "icebreaker", frame_timeout=bad)
    top = BoardTop(plan, "icebreaker")
    assert top.weight_ram == "huge" and top.pll and top.divisor == round(30e6 / 115200)
    assert top.frame_timeout == P.TIMEOUT_BITS
    assert BoardTop(plan, "ulx3s", clock_mhz=25).pll is None
    assert set(BOARDS) == {"icebreaker", "ulx3s", "versa"}


def test_board_table():
    """One table: every board names a device of the table; family facts come from the family."""
    for b in BOARDS.values():
        assert b.device is DEVICES[b.device.name] and b.family is FAMILIES[b.family.name]
        assert set(b.device.capacity) == {"luts", "ffs", "brams", "sprams", "dsps"}
    assert FAMILIES["ice40"].synth_command(dsp=True) == "synth_ice40 -dsp"
    assert FAMILIES["ecp5"].synth_command(dsp=False) == "synth_ecp5 -nodsp"
    assert BOARDS["icebreaker"].family.bitstream == "top.bin"
    assert BOARDS["ulx3s"].family.placed({"TRELLIS_COMB": 7})["luts"] == 7


# -- board-level cocotb test -----------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["asm", "smartdeal"])
def test_board_uart_bit_exact(tmp_path, scheme):
    """The host link in cocotb through its UART pins: identify, load every weight word into
    the (empty) SPRAM memory, infer extreme and random inputs, read counters; bit-exact."""
    from insitu.sim.board_sim import simulate_board
    plan, rng = small_plan(scheme)
    x = extreme_inputs(rng, 50, n_random=1)
    r = simulate_board(plan, x, tmp_path, gaps=0.2)
    assert r["passed"], {k: r.get(k) for k in ("mismatches", "ident_ok", "counters_ok", "refusals")}
    # only the empty SPRAM-style weight memory needs a load: the others match at power-up
    assert r["mismatches"] == 0 and r["vectors"] == len(x) and r["loads"] == len(plan.weight_words)
    assert r["refusals_ok"] and r["refusals"]["bad_crc"] == ["R", ""] and r["retries"] == 0
    assert r["outputs"] == golden_vectors(plan, x).tolist()
    assert all(c["weight_bits"] == plan.weight_bits_per_inference for c in r["counters"])


def test_complete_icebreaker_top_through_its_pins(tmp_path):
    """The whole iCEBreaker top as amaranth-boards builds it (PLL, reset synchroniser, SB_IO
    pads, LEDs), with Yosys' iCE40 cell models, driven only through its clock and UART pins."""
    from insitu.sim.board_sim import simulate_board_top
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=1)
    r = simulate_board_top(plan, x, tmp_path, gaps=0.2)
    assert r["passed"] and r["mismatches"] == 0 and r["vectors"] == len(x)
    assert r["counters_ok"] and r["refusals_ok"] and r["ident_ok"]
    assert r["leds"] == [1, 1]                  # active-low LEDs: not busy, no error


def test_complete_icebreaker_top_with_its_flash(tmp_path):
    """The whole iCEBreaker top with its weights in the SPI flash: the flash model on the
    quad-SPI pads (image at the board's 1 MB offset), inferences as the first frames after
    configuration, bit-exact; the flash read once at power-up (the image check) and once
    per inference."""
    from insitu.sim.board_sim import link_test_plan, simulate_board_top
    plan = link_test_plan("asm", lanes=3)
    plan.weight_flash = "qspi"
    x = np.random.default_rng(0).integers(0, 256, (2, 16))
    r = simulate_board_top(plan, x, tmp_path, powerup=True)
    assert r["passed"] and r["mismatches"] == 0 and r["vectors"] == 2
    assert r["flash"]["reads"] == 3 and r["flash"]["errors"] == []
    assert r["counters"][0]["verified"] and not r["counters"][0]["err"]
    assert r["error_led"] == 0 and r["error_led_at_boot"] == 0


@pytest.mark.parametrize("plant", [None, "flash"])
def test_complete_icebreaker_top_netlist_with_its_flash(tmp_path, plant):
    """Gate level: the same top as ``insitu synth`` maps it (synth_ice40 -dsp: LUT4s,
    carries, flip-flops, EBR, DSP, SB_IO pads) with the flash model on its quad-SPI pads:
    power-up inferences bit-exact, error LED off; with one flipped bit in the flash, the
    error LED on after the power-up image check, before any inference, and no result at all."""
    from insitu.sim.board_sim import link_test_plan, simulate_board_top
    plan = link_test_plan("asm", lanes=3)
    plan.weight_flash = "qspi"
    x = np.random.default_rng(0).integers(0, 256, (2, 16))
    r = simulate_board_top(plan, x, tmp_path, powerup=True, netlist=True, plant=plant)
    assert "SB_LUT4 " in (tmp_path / "top_sim.v").read_text()
    if plant is None:
        assert r["passed"] and r["mismatches"] == 0 and r["vectors"] == 2
        assert r["flash"]["reads"] == 3 and r["flash"]["errors"] == [] and r["error_led"] == 0
        assert r["error_led_at_boot"] == 0
    else:
        assert not r["passed"] and r["vectors"] == 0 and r["error_led"] == 1
        assert r["error_led_at_boot"] == 1
        assert r["error"] == P.IMAGE_BAD and r["host_stats"].get("retries", 0) == 0


def test_board_uart_planted_errors_fail(tmp_path):
    """The bench can fail: one expected output off by one is a mismatch; one flipped bit in
    one loaded weight word never verifies, so the board refuses to infer."""
    from insitu.sim.board_sim import simulate_board
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=0)[:2]
    r = simulate_board(plan, x, tmp_path, plant="golden", sim="verilator")
    assert not r["passed"] and r["mismatches"] == 1
    r = simulate_board(plan, x, tmp_path, plant="load", sim="verilator")
    assert not r["passed"] and r["vectors"] == 0
    assert r["error"].startswith("the loaded memories do not verify after 3 loads (crc32: "
                                 "weight ")


# -- host driver against a board model --------------------------------------------------------
class FakeBoard:
    """A board in Python: protocol v2 frames answered from the golden model and a memory
    image (the host driver's counterpart; the RTL is tested through its pins above).
    ``flip``: every output off by one; ``empty``: the weight memory starts empty;
    ``engine_err``: every inference flagged; ``image_bad``: the power-up image check failed."""

    def __init__(self, plan, flip=False, empty=True, engine_err=False, image_bad=False):
        self.plan, self.flip, self.image_bad = plan, flip, image_bad
        self.engine_err = engine_err or image_bad
        self.rx, self.tx = bytearray(), bytearray()
        self.lb = P.load_bytes(plan)
        self.n_in, self.n_out = P.io_sizes(plan)
        self.words = P.memory_words(plan)
        self.mem = {}
        self.loaded = [[] if (i == 0 and empty) else list(w) for i, w in enumerate(self.words)]
        self.inferences = 0

    def _answer(self, code, payload=b""):
        self.tx += P.frame(code, payload)

    def _checks(self):
        return [(len(ws), zlib.crc32(b"".join(w.to_bytes(self.lb, "little") for w in ws)))
                for ws in self.loaded]

    def _verified(self):
        return self._checks() == P.memory_checks(self.plan)

    def write(self, data):
        self.rx += data
        while len(self.rx) >= 3:
            n = int.from_bytes(self.rx[1:3], "little")
            if n > max(self.n_in, 3 + self.lb):
                self._answer("W")
                self.rx.clear()                  # dropped until the line is quiet
                return
            if len(self.rx) < 5 + n:
                return
            fr, self.rx = bytes(self.rx[:5 + n]), self.rx[5 + n:]
            c, body = chr(fr[0]), fr[3:3 + n]
            want = {"I": 0, "C": 0, "V": 0, "L": 3 + self.lb, "X": self.n_in}
            if P.crc16(fr):
                self._answer("R")
            elif c in want and n != want[c]:
                self._answer("W")
            elif c == "I":
                self._answer("I", P.ident(self.plan))
            elif c == "V":
                self._answer("V", b"".join(struct.pack("<I", c) for _, c in self._checks())
                             + bytes([self._verified()]))
            elif c == "L":
                mem, addr = body[0], int.from_bytes(body[1:3], "little")
                if mem >= 4 or addr >= len(self.words[mem]):
                    self._answer("A")
                    continue
                have = self.loaded[mem]
                if addr and addr > len(have):
                    self._answer("G")
                    continue
                if addr == 0 or addr == len(have):
                    del have[addr:]
                    have.append(int.from_bytes(body[3:], "little"))
                    self.mem[(mem, addr)] = have[-1]
                self._answer("K", body[:3])
            elif c == "X":
                if not self._verified():
                    self._answer("N")
                    continue
                x = np.frombuffer(body, dtype=np.uint8)
                y = golden_vectors(self.plan, x[None].astype(np.int64))[0]
                if self.flip:
                    y[0] += 1
                self._answer("Y", b"".join(int(v).to_bytes(4, "little", signed=True) for v in y))
                if self.engine_err:                  # the board spoils a flagged Y's CRC
                    self.tx[-2:] = bytes(b ^ 0xFF for b in self.tx[-2:])
            elif c == "C":                       # cycles: 1000 + inferences so far
                self.inferences += 1
                self._answer("C", (1000 + self.inferences).to_bytes(P.COUNTER_BYTES, "little")
                             + bytes(P.STATUS_LEN - P.COUNTER_BYTES - 1)
                             + bytes([8 | 2 * self.engine_err | 16 * self.image_bad]))
            else:
                self._answer("?")

    def read(self, n):
        out = bytes(self.tx[:n])
        del self.tx[:n]
        return out


class Noisy:
    """A serial line to ``board`` that flips one bit of the written bytes whose index is in
    ``flips`` (counted over everything written)."""

    def __init__(self, board, flips):
        self.board, self.flips, self.n = board, set(flips), 0

    def write(self, data):
        data = bytearray(data)
        for i in range(len(data)):
            if self.n + i in self.flips:
                data[i] ^= 0x10
        self.n += len(data)
        self.board.write(bytes(data))

    def read(self, n):
        return self.board.read(n)


def test_host_driver_loads_and_runs():
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=2)
    fb = FakeBoard(plan)
    rep = run_board(Board(fb), plan, x)
    assert rep["bit_exact"] and rep["vectors"] == len(x) and rep["link"]["retries"] == 0
    assert rep["loaded_words"] == len(plan.weight_words)     # the other memories matched
    assert fb.mem[(0, 5)] == plan.weight_words[5]
    bad = run_board(Board(FakeBoard(plan, flip=True)), plan, x)
    assert not bad["bit_exact"] and bad["mismatches"] == len(x)


def test_host_driver_retries_corrupted_frames():
    """Flipped bits in an identify, a load window and an input frame: each frame is refused
    (bad CRC), resent, and the run ends bit-exact with the retries counted."""
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=0)[:2]
    lf = 8 + P.load_bytes(plan)                      # bytes per load frame
    n_load = lf * len(plan.weight_words)               # only the empty memory is loaded
    # I, V, the load frames, V, X: I's CRC byte; a data byte of the 4th load frame; the
    # 11th input byte of the first X
    flips = {3, 10 + 3 * lf + 6, 10 + n_load + 5 + 3 + 10}
    rep = run_board(Board(Noisy(FakeBoard(plan), flips)), plan, x)
    assert rep["bit_exact"] and rep["link"]["retries"] == 3
    assert rep["link"]["causes"] == {"bad CRC (frame discarded)": 3}


def test_host_driver_reports_an_engine_error():
    """A board whose engine flagged the inference spoils its Y answer's CRC: the host reads
    the status, retries, and ends with the engine's error, never with outputs; a Y answer
    damaged on the line (status clean) stays an ordinary retry."""
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=0)[:1]
    fb = FakeBoard(plan, empty=False, engine_err=True)
    host = P.Host(plan)
    with pytest.raises(P.ProtocolError) as exc:
        Board(fb).drive(host.infer(x[0], load=False))
    assert str(exc.value) == f"the board did not take the 'X' frame in 5 tries (last: " \
                             f"{P.ENGINE_ERROR})"
    assert host.stats[P.ENGINE_ERROR] == 5
    # a failed power-up image check is permanent: one try, and the message says what to do
    host = P.Host(plan)
    with pytest.raises(P.ProtocolError) as exc:
        Board(FakeBoard(plan, empty=False, image_bad=True)).drive(host.infer(x[0], load=False))
    assert str(exc.value) == P.IMAGE_BAD and host.stats[P.IMAGE_BAD] == 1
    assert host.stats["retries"] == 0

    class BadOnce(FakeBoard):                    # the first Y answer damaged on the line
        spoiled = False

        def read(self, n):
            out = super().read(n)
            if not self.spoiled and n > 3:
                self.spoiled = True
                out = out[:-1] + bytes([out[-1] ^ 1])
            return out
    host = P.Host(plan)
    got = Board(BadOnce(plan, empty=False)).drive(host.infer(x[0], load=False))
    assert got == golden_vectors(plan, x)[0].tolist()
    assert host.stats["answer CRC"] == 1 and host.stats[P.ENGINE_ERROR] == 0


def test_host_driver_refuses_other_design_and_silence():
    plan, rng = small_plan()
    other, _ = small_plan(lanes=2)
    with pytest.raises(P.ProtocolError, match="the board runs another design"):
        run_board(Board(FakeBoard(other)), plan, extreme_inputs(rng, 50, 0))

    class Silent:
        def write(self, data):
            pass

        def read(self, n):
            return b""
    with pytest.raises(P.ProtocolError, match=r"did not take the 'I' frame in 5 tries "
                                              r"\(last: no answer\)"):
        Board(Silent()).drive(P.Host(plan).identify())


@pytest.mark.parametrize("case, msg", [
    ("bad_crc", "the board did not take the 'I' frame in 5 tries (last: bad CRC (frame "
                "discarded))"),
    ("unknown", "the board refused the 'Z' frame: unknown command"),
    ("too_long", "the board did not take the 'C' frame in 5 tries (last: frame length wrong "
                 "for the command)"),
    ("address", "the board refused the load of memory 0 word 9999: load address out of range"),
    ("not_verified", "the board refused the 'X' frame: memories not verified: load them before "
                     "inferring"),
])
def test_host_messages_for_refused_frames(case, msg):
    """The protocol's bad-input cases, as the host reports them: one line each."""
    plan, _ = small_plan()
    fb = FakeBoard(plan)
    host = P.Host(plan)
    if case == "bad_crc":
        board, session = Board(Noisy(fb, range(0, 100, 5))), host.identify()
    elif case == "unknown":
        board, session = Board(fb), host.exchange("Z", b"", "Z")
    elif case == "too_long":
        board, session = Board(fb), host.exchange("C", b"\0" * 3, "C")
    elif case == "address":
        host = P.Host(plan, words=[(0, 9999, 0)])
        board, session = Board(fb), host.load()
    else:
        board, session = Board(fb), host.infer(np.zeros(50), load=False)
    with pytest.raises(P.ProtocolError) as exc:
        board.drive(session)
    assert str(exc.value) == msg and "\n" not in msg


def test_cli_run_no_load_on_an_empty_board(tmp_path, capsys, monkeypatch):
    """insitu run --no-load against a board whose weight memory is empty: verify refuses."""
    from insitu.cli import board as cli_board
    plan, rng = small_plan()
    write_design(plan, tmp_path / "d", extreme_inputs(rng, 50, n_random=1))
    fb = FakeBoard(plan)
    fb.close = lambda: None
    monkeypatch.setattr(cli_board, "open_port", lambda port, baud, timeout: fb)
    assert cli.main(["run", str(tmp_path / "d"), "--port", "fake", "--no-load"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("insitu: error: the board's memories do not match this "
                                    "folder's image (verify answer); run without --no-load")
    assert not (tmp_path / "d" / "run_report.json").exists()


def test_cli_run_bad_port(tmp_path, capsys):
    plan, rng = small_plan()
    write_design(plan, tmp_path / "d", extreme_inputs(rng, 50, 0))
    assert cli.main(["run", str(tmp_path / "d"), "--port", "/dev/does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert "cannot open serial port '/dev/does-not-exist'" in err and err.count("\n") == 1
    assert not (tmp_path / "d" / "run_report.json").exists()


@pytest.mark.parametrize("args, msg", [
    (["--board", "de0"], "Unknown board 'de0' (boards: icebreaker, ulx3s, versa)"),
    (["--board", "icebreaker", "--lanes", "0"], "--lanes must be in 1..64, not 0"),
    (["--board", "icebreaker", "--scheme", "fp8"], "Unknown scheme 'fp8'"),
    (["--board", "icebreaker", "missing_dir"], "missing_dir"),
    (["--board", "ulx3s", "--placer", "sa"], "Unknown placer 'sa' (placers: heap, static)"),
    (["--board", "ulx3s", "--router", "r3"], "Unknown router 'r3' (routers: router1, router2)"),
])
def test_cli_synth_bad_input(tmp_path, capsys, args, msg):
    assert cli.main(["synth", *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.startswith("insitu: error:")
    assert not (tmp_path / "out").exists()


def test_synth_refuses_a_model_that_does_not_fit(tmp_path, capsys):
    """ResNet-8 int8 with its weights on chip does not fit the UP5K: one line naming each
    memory's need and the device's block RAM and SPRAM, before any tool runs, nothing
    written; with its weights in the flash it is placed (activations in three SPRAM banks)."""
    from insitu.cli import main
    out = tmp_path / "ice"
    from pathlib import Path
    onnx_file = Path(__file__).resolve().parents[1] / "models" / "resnet8" / "model.onnx"
    assert main(["compile", str(onnx_file), "--scheme", "int8", "-o",
                 str(tmp_path / "r8")]) == 0
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "r8"), "--board", "icebreaker", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("int8 1x32x32 model does not fit icebreaker (iCE40UP5K-SG48): needs activations "
            "49152 bytes, tile buffers, fill caches and post/aux/coefficient images 12803 bytes, weight "
            "memory 77456 bytes; has block RAM 15360 bytes, SPRAM 4 x 32768 bytes") in err
    assert err.count("\n") == 1 and "--weight-flash qspi" in err
    assert not out.exists()
    plan = load_plan(tmp_path / "r8")
    plan.weight_flash = "qspi"
    place = place_memories("icebreaker", plan)
    assert (place.weight_ram, place.act_ram, place.sprams) == ("flash", "huge", 3)
    assert {lp.out_base % 16384 for lp in place.plan.layers} == {0}
    # the board identifies itself with the compiled folder's fingerprint, banks or not
    assert place.plan.to_json() != plan.to_json()
    assert P.plan_id(place.plan) == P.plan_id(plan)
    place.plan.post_words[0] ^= 1                 # another design
    assert P.plan_id(place.plan) != P.plan_id(plan)
    wide = load_plan(tmp_path / "r8")            # several channels per word: no SPRAM banks
    wide.weight_flash, wide.cpar = "qspi", 2
    with pytest.raises(ValueError, match=r"\(activations go to SPRAM banks with cpar 1 only, "
                                         r"not 2\)$"):
        place_memories("icebreaker", wide)
    plan.weight_flash = ""
    ulx = place_memories("ulx3s", plan)
    assert ulx.weight_ram == "block" and place.issue == "skid" and ulx.issue == "slice"
    assert ulx.engine_kwargs == {"weight_ram": "block", "issue": "slice"}


def test_flash_tops_elaborate():
    """The flash pins of both flash boards: the iCEBreaker's quad-SPI resource; the ULX3S's
    own bidirectional pins with its clock through USRMCLK."""
    from insitu.sim.board_sim import link_test_plan
    plan = link_test_plan("asm", lanes=3)
    plan.weight_flash = "qspi"
    ice = board_platform("icebreaker").prepare(BoardTop(plan, "icebreaker"), name="top")
    assert "spi_flash_4x_0__dq__io" in ice.files["top.il"]
    ulx = board_platform("ulx3s").prepare(BoardTop(plan, "ulx3s"), name="top")
    assert "USRMCLK" in ulx.files["top.il"] and "insitu_flash_0__dq__io" in ulx.files["top.il"]
    assert 'LOCATE COMP "insitu_flash_0__dq__io[0]" SITE "W2"' in ulx.files["top.lpf"]


def test_flash_placement_errors(monkeypatch):
    """A board without a usable flash, and a weight stream larger than the flash after the
    bitstream: one line each."""
    from insitu.boards import fpga
    from insitu.sim.board_sim import link_test_plan
    plan = link_test_plan("asm", lanes=3)
    plan.weight_flash = "qspi"
    with pytest.raises(ValueError, match="^board versa has no SPI flash the weights can stream"):
        place_memories("versa", plan)
    small = dataclasses.replace(BOARDS["icebreaker"].flash,
                                size=(1 << 20) + len(flash_image(plan)) - 1)
    monkeypatch.setitem(fpga.BOARDS, "icebreaker",
                        dataclasses.replace(BOARDS["icebreaker"], flash=small))
    with pytest.raises(ValueError, match=r"^the weight stream \(\d+ bytes at offset 0x100000\) "
                                         r"does not fit the 1 MB flash of icebreaker$"):   # (1 MB rounded down)
        place_memories("icebreaker", plan)


@pytest.mark.parametrize("scheme", ["asm", "mlg"])
def test_board_powers_up_and_infers_from_flash(tmp_path, scheme):
    """A board whose weights stream from the SPI flash (the flash model on the link's pins):
    the first frames after reset are inferences (nothing loaded, nothing verified) and they
    are bit-exact; the flash is read once at power-up (the image check) and once per
    inference.  A flipped bit in the flash lights the error LED before any inference and
    no inference is answered."""
    from insitu.sim.board_sim import link_test_plan, simulate_board
    plan = link_test_plan(scheme, lanes=3)
    plan.weight_flash = "qspi:2"
    x = np.random.default_rng(0).integers(0, 256, (2, 16))
    r = simulate_board(plan, x, tmp_path, sim="verilator", powerup=True)
    assert r["passed"] and r["mismatches"] == 0 and r["vectors"] == 2
    assert r["outputs"] == golden_vectors(plan, x).tolist()
    assert r["flash"]["reads"] == 3 and r["flash"]["bytes_read"] == 3 * len(flash_image(plan))
    assert r["counters"][0]["verified"] and not r["counters"][0]["err"]
    assert r["error_led_at_boot"] == 0
    if scheme == "asm":
        # a flipped flash bit: the stream's CRC check raises the engine's err (the error LED)
        # and the board spoils every Y answer's CRC: an error, never a result
        r = simulate_board(plan, x, tmp_path, sim="verilator", powerup=True,
                           plant="flash")
        assert not r["passed"] and r["vectors"] == 0 and r["outputs"] == []
        assert r["error"] == P.IMAGE_BAD and r["error_led"] == 1
        assert r["error_led_at_boot"] == 1
        assert r["host_stats"][P.IMAGE_BAD] == 1 and r["host_stats"].get("retries", 0) == 0
        # the whole session on this load-less link: every load refused with A, nothing to load
        r = simulate_board(plan, x, tmp_path, sim="verilator")
        assert r["passed"] and r["refusals_ok"] and r["loads"] == 0 and r["counters_ok"]
        assert r["refusals"]["address"] == ["A", ""] and r["refusals"]["memory"] == ["A", ""]


def test_board_powers_up_with_weights_in_the_bitstream(tmp_path):
    """The bitstream-only deployment: every memory in block RAM, initialised by the
    bitstream; the first frames after reset are inferences, bit-exact (no load, no verify).
    The engine as the ULX3S builds it: a register slice on the issue path."""
    from insitu.sim.board_sim import link_test_plan, simulate_board
    plan = link_test_plan("mlg", lanes=3)
    x = np.random.default_rng(2).integers(0, 256, (2, 16))
    r = simulate_board(plan, x, tmp_path, sim="verilator", powerup=True,
                       **place_memories("ulx3s", plan).engine_kwargs)
    assert r["passed"] and r["mismatches"] == 0 and r["vectors"] == 2
    assert r["counters"][0]["verified"] and not r["counters"][0]["err"] and r["error_led"] == 0
    assert "flash" not in r


def test_cli_run_reports_cycles_and_latency(tmp_path, capsys, monkeypatch):
    """insitu run: the cycle counter of every inference, and with --clock its latency."""
    import json

    from insitu.cli import board as cli_board
    plan, rng = small_plan()
    x = extreme_inputs(rng, 50, n_random=1)
    write_design(plan, tmp_path / "d", x)
    fb = FakeBoard(plan)
    fb.close = lambda: None
    monkeypatch.setattr(cli_board, "open_port", lambda port, baud, timeout: fb)
    assert cli.main(["run", str(tmp_path / "d"), "--port", "fake", "--clock", "25"]) == 0
    out = capsys.readouterr().out
    n = len(x)
    assert f"cycle counter per inference: 1001..{1000 + n}; latency 0.040..{(1000 + n) / 25e3:.3f} " \
           "ms at 25 MHz" in out
    rep = json.loads((tmp_path / "d" / "run_report.json").read_text())
    assert rep["cycles_per_inference"] == list(range(1001, 1001 + n))
    assert rep["latency_ms_per_inference"][0] == pytest.approx(1001 / 25e3)
    assert cli.main(["run", str(tmp_path / "d"), "--port", "fake", "--clock", "0"]) == 2
    assert "--clock must be a positive frequency in MHz, not 0.0" in capsys.readouterr().err


def test_cli_run_timeouts(tmp_path, capsys, monkeypatch):
    """insitu run --timeout / --infer-timeout / --frame-timeout reach the serial port and the
    host driver (its resync waits twice the board's frame timeout); bad values are one line."""
    from insitu.cli import board as cli_board
    plan, rng = small_plan()
    write_design(plan, tmp_path / "d", extreme_inputs(rng, 50, n_random=0)[:2])
    fb = FakeBoard(plan)
    fb.close = lambda: None
    seen = {}
    monkeypatch.setattr(cli_board, "open_port",
                        lambda port, baud, timeout: seen.update(timeout=timeout) or fb)
    real_board = cli_board.Board
    monkeypatch.setattr(cli_board, "Board", lambda ser, **kw: seen.update(kw) or real_board(ser, **kw))
    assert cli.main(["run", str(tmp_path / "d"), "--port", "fake", "--baud", "9600",
                     "--timeout", "0.5", "--infer-timeout", "30", "--frame-timeout", "960"]) == 0
    assert seen == {"timeout": 0.5, "infer_timeout": 30.0, "settle": 0.2}
    capsys.readouterr()
    for args, msg in ((["--timeout", "0"], "--timeout must be a positive number of seconds, not 0.0"),
                      (["--infer-timeout", "nan"], "--infer-timeout must be a positive number"),
                      (["--frame-timeout", "4"], "--frame-timeout: frame timeout must be 8..1048576 "
                                                 "bit times, not 4")):
        assert cli.main(["run", str(tmp_path / "d"), "--port", "fake", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    assert cli.main(["synth", "--board", "icebreaker", "--frame-timeout", "0", "-o",
                     str(tmp_path / "out")]) == 2
    assert "--frame-timeout: frame timeout must be 8..1048576" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bench_board(tmp_path, capsys):
    """insitu bench board: a compiled folder placed as the iCEBreaker build places it, run
    through the host link's pins (a load first: its weights go to SPRAM), bit-exact, with the
    engine's cycle counter and the latency at the board's clock; bad input is one line."""
    import json
    plan, rng = small_plan()
    write_design(plan, tmp_path / "d", extreme_inputs(rng, 50, n_random=1))
    out = tmp_path / "b"
    assert cli.main(["bench", "board", str(tmp_path / "d"), "--board", "icebreaker",
                     "--images", "2", "-o", str(out)]) == 0
    rep = json.loads((out / "bench_board.json").read_text())
    assert rep["bit_exact"] and rep["vectors"] == 2 and not rep["powerup"]
    assert rep["placement"].startswith("weights in SPRAM")
    assert rep["cycles"] > 0 and rep["latency_ms"] == round(rep["cycles"] / 30e3, 3)
    assert "| bit-exact | yes (0 mismatches) |" in capsys.readouterr().out
    for args, msg in (
            (["--board", "ulx3s", "--top"], "the complete top (--top, --netlist) is simulated "
                                            "for the iCEBreaker only, not ulx3s"),
            (["--board", "icebreaker", "--images", "0"], "--images must be a positive integer"),
            (["--board", "de0"], "Unknown board 'de0'")):
        assert cli.main(["bench", "board", str(tmp_path / "d"), *args, "-o",
                         str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") <= 2      # (the progress line, the error)


def test_fault_campaign_short(tmp_path):
    """The short version of 'insitu bench faults': two runs of every fault kind through the
    pins end bit-exact or with a reported error, never silently wrong; the control (a link
    that ignores frame CRCs) turns input-byte flips into silent wrong answers."""
    from insitu.sim.board_sim import FAULT_KINDS, fault_campaign, link_test_plan
    plan = link_test_plan()
    x = np.random.default_rng(1).integers(0, 256, size=(2, 16))
    r = fault_campaign(plan, x, tmp_path / "f", {k: 2 for k in FAULT_KINDS}, seed=3)
    assert r["passed"] and len(r["runs"]) == 2 * len(FAULT_KINDS)
    assert all(q["outcome"] in ("bit_exact", "error") for q in r["runs"])
    assert all(q["fired"] for q in r["runs"])
    assert sum(q["outcome"] == "bit_exact" for q in r["runs"]) >= len(FAULT_KINDS)
    ctl = fault_campaign(plan, x, tmp_path / "c", {"flip_input": 3}, seed=3, check_frames=False)
    assert not ctl["passed"] and any(q["outcome"] == "silent_wrong" for q in ctl["runs"])
