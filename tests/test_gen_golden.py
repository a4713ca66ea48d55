"""Golden model (gen/golden.py), ASM section: sets, rounding, codes, MAC reference."""

import itertools

import numpy as np
import pytest

from insitu.gen import golden
from insitu.gen.golden import AsmCodeFormat

# -- alphabet sets ------------------------------------------------------------------------

def test_named_alphabets():
    assert golden.parse_alphabet("A1") == (1,)
    assert golden.parse_alphabet("a2") == (1, 3)
    assert golden.parse_alphabet("1,3,5,7") == (1, 3, 5, 7)
    assert golden.parse_alphabet([7, 1, 5, 3]) == (1, 3, 5, 7)
    assert golden.parse_alphabet("A8") == tuple(range(1, 16, 2))
    assert golden.alphabet_name((1, 3)) == "A2"
    assert golden.alphabet_name("1,5") == "1,5"


@pytest.mark.parametrize("bad, msg", [
    ("2,3", r"^Alphabet must contain odd integers in 1\.\.15, not '2,3'$"),
    ((1, 17), r"^Alphabet must contain odd integers in 1\.\.15, not \(1, 17\)$"),
    ((), r"^Alphabet must contain odd integers in 1\.\.15, not \(\)$"),
    ("3,5", r"^Alphabet must contain 1, not '3,5'$"),
    ("A3", r"^Alphabet must be one of A1, A2, A4, A8 or a comma-separated list of odd integers, not 'A3'$"),
])
def test_bad_alphabets(bad, msg):
    with pytest.raises(ValueError, match=msg):
        golden.parse_alphabet(bad)


# -- representable sets and rounding (algorithms.md 3.2) -----------------------------------

def test_quartet_support():
    assert [q for q in range(16) if golden.quartet_ok(q, "A4")] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14]
    assert [q for q in range(16) if golden.quartet_ok(q, "A2")] == [0, 1, 2, 3, 4, 6, 8, 12]
    assert [q for q in range(16) if golden.quartet_ok(q, "A1")] == [0, 1, 2, 4, 8]
    assert all(golden.quartet_ok(q, "A8") for q in range(16))


@pytest.mark.parametrize("name, count, top", [("A4", 144, 238), ("A2", 64, 204), ("A1", 25, 136),
                                              ("A8", 256, 255)])
def test_eight_bit_sets(name, count, top):
    rep = golden.representable(8, name)
    assert len(rep) == count and rep[-1] == top


def test_a1_a2_lists_from_spec():
    assert golden.representable(8, "A1").tolist() == [
        0, 1, 2, 4, 8, 16, 17, 18, 20, 24, 32, 33, 34, 36, 40, 64, 65, 66, 68, 72, 128, 129, 130, 132, 136]
    assert golden.representable(8, "A2").tolist()[:16] == [0, 1, 2, 3, 4, 6, 8, 12, 16, 17, 18, 19, 20, 22, 24, 28]


@pytest.mark.parametrize("name, count", [("A4", 96), ("A2", 48), ("A1", 20)])
def test_int8_sign_magnitude_counts(name, count):
    assert int(np.sum(golden.representable(8, name) < 128)) == count


@pytest.mark.parametrize("name, table", [
    ("A4", "0 1 2 3 4 5 6 7 8 8 10 10 12 12 14 14"),
    ("A2", "0 1 2 3 4 4 6 6 8 8 8 12 12 12 12 12"),
    ("A1", "0 1 2 2 4 4 4 8 8 8 8 8 8 8 8 8"),
])
def test_four_bit_nearest_tables(name, table):
    assert golden.nearest_lut(4, name).tolist() == [int(v) for v in table.split()]


def _per_quartet(m, name):
    lut4 = golden.nearest_lut(4, name)
    return int(lut4[m >> 4]) * 16 + int(lut4[m & 15])


@pytest.mark.parametrize("name, disagree", [("A4", 62), ("A2", 111), ("A1", 109)])
def test_global_vs_per_quartet_rounding(name, disagree):
    lut = golden.nearest_lut(8, name)
    assert sum(int(lut[m]) != _per_quartet(m, name) for m in range(256)) == disagree
    if name == "A1":
        assert _per_quartet(31, "A1") == 24 and lut[31] == 32


def test_nearest_is_nearest_with_ties_to_smaller():
    for name in ("A1", "A2", "A4"):
        rep = golden.representable(12, name)
        lut = golden.nearest_lut(12, name)
        for m in range(0, 4096, 7):
            d = np.abs(rep - m)
            best = rep[d == d.min()]
            assert lut[m] == best.min()


def test_asm_quantize():
    sign, mag = golden.asm_quantize([-3.0, 0.2, 9.0, 100.0, -0.0], 1.0, 4, "A2")
    assert sign.tolist() == [1, 0, 0, 0, 0]
    assert mag.tolist() == [3, 0, 8, 12, 0]                # 9 -> 8 (nearest), 100 clips to 15 -> 12
    with pytest.raises(ValueError, match=r"^Weights must be finite, but contain NaN or inf$"):
        golden.asm_quantize([np.nan], 1.0, 8, "A4")
    with pytest.raises(ValueError, match=r"^Quantiser scale must be a positive finite number, not 0\.0$"):
        golden.asm_quantize([1.0], 0.0, 8, "A4")


# -- weight code ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, qbits", [("A1", 3), ("A2", 3), ("A4", 4), ("A8", 5)])
def test_code_widths(name, qbits):
    fmt = AsmCodeFormat(8, name)
    assert fmt.quartet_bits == qbits
    assert fmt.width == 2 * qbits + 1


@pytest.mark.parametrize("name, bits", itertools.product(["A1", "A2", "A4", "A8", "1,5"], [4, 8, 12]))
def test_code_roundtrip(name, bits):
    fmt = AsmCodeFormat(bits, name)
    for mag in golden.representable(bits, name):
        for sign in (0, 1):
            code = fmt.encode(sign, int(mag))
            assert 0 <= code < (1 << fmt.width)
            assert fmt.decode(code) == (sign, int(mag))


@pytest.mark.parametrize("name", ["A1", "A2", "A4", "A8"])
def test_every_code_decodes_or_is_invalid(name):
    """Exhaustive: each code is either invalid or decodes to a representable magnitude."""
    fmt = AsmCodeFormat(8, name)
    rep = set(golden.representable(8, name).tolist())
    seen = set()
    for code in range(1 << fmt.width):
        if fmt.is_valid(code):
            sign, mag = fmt.decode(code)
            assert mag in rep
            seen.add((sign, mag))
    assert len(seen) == 2 * len(rep)                      # every weight has a code


def test_invalid_codes():
    assert AsmCodeFormat(8, "A1").invalid_quartet_codes() == []
    assert AsmCodeFormat(8, "A2").invalid_quartet_codes() == []
    # A4: (sel, shift) = (2,2) 5<<2, (2,3) 5<<3, (3,2) 7<<2 are invalid; (3,3) is the zero code.
    assert AsmCodeFormat(8, "A4").invalid_quartet_codes() == [(1 << 2) | 3, (2 << 2) | 2,
                                                              (2 << 2) | 3, (3 << 2) | 2]
    fmt = AsmCodeFormat(8, "A4")
    with pytest.raises(ValueError, match=r"^Quartet code 0xb decodes to 5<<3 = 40, which does not fit a quartet$"):
        fmt.decode(0xb)
    with pytest.raises(ValueError, match=r"^Quartet value 9 is not representable with alphabet A4$"):
        fmt.encode(0, 9)
    with pytest.raises(ValueError, match=r"^Weight magnitude must be in 0\.\.255, not 256$"):
        fmt.encode(0, 256)


@pytest.mark.parametrize("bits", [0, 3, 6, -4])
def test_bad_weight_bits(bits):
    with pytest.raises(ValueError, match=r"^Weight magnitude bits must be a "):
        AsmCodeFormat(bits, "A4")


# -- MAC reference ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, bits", itertools.product(["A1", "A2", "A4", "A8"], [4, 8, 12]))
def test_shift_add_equals_product(name, bits):
    """The datapath's select/shift/add equals x * w for every representable weight."""
    rep = golden.representable(bits, name)
    for x in (-128, -1, 0, 1, 77, 255):
        for mag in rep[:: max(1, len(rep) // 97)]:
            for sign in (0, 1):
                w = -int(mag) if sign else int(mag)
                assert golden.asm_mul_shift_add(x, sign, int(mag), name, bits) == x * w


def test_asm_mac_plain_product():
    x = np.array([1, 2, 3])
    w = np.array([[1, -2], [3, 4], [-5, 6]])
    assert golden.asm_mac(x, w).tolist() == [1 + 6 - 15, -2 + 8 + 18]


def test_asm_mac_overflow_raises():
    with pytest.raises(OverflowError, match=r"^Accumulator after term 1 exceeds its declared 8-bit signed width$"):
        golden.asm_mac([100, 100], [[1], [1]], acc_bits=8)
    golden.asm_mac([127], [[1]], acc_bits=8)              # exactly fits


def test_asm_mac_checks_operands():
    with pytest.raises(OverflowError, match=r"^Activation 256 exceeds 8-bit unsigned range$"):
        golden.asm_mac([256], [[1]], act_bits=8)
    with pytest.raises(ValueError, match=r"^Weight 9 is not representable in 8 magnitude bits with alphabet A4$"):
        golden.asm_mac([1], [[9]], weight_bits=8, alphabet="A4")


@pytest.mark.parametrize("name, bits, signed", itertools.product(["A1", "A2", "A4"], [4, 8, 12], [False, True]))
def test_acc_bits_is_tight(name, bits, signed):
    """The derived accumulator holds the longest extreme sum, and one bit less does not."""
    n = 37
    acc = golden.asm_acc_bits(8, signed, bits, name, n)
    wmax = int(golden.representable(bits, name)[-1])
    xbig = -128 if signed else 255
    for w in (wmax, -wmax):
        golden.asm_mac([xbig] * n, [[w]] * n, acc_bits=acc)
    with pytest.raises(OverflowError):
        golden.asm_mac([xbig] * n, [[wmax if not signed else -wmax]] * n, acc_bits=acc - 1)
