"""Compressors (gen/smartdeal.py, gen/mlg.py, gen/compress.py), model files and golden SD/MLG."""

import json

import numpy as np
import pytest

import insitu.cli as cli
from insitu.gen import golden
from insitu.gen.compress import compress_model, make_config
from insitu.gen.golden import SdFormat
from insitu.gen.mlg import MlgConfig, quantize_odd
from insitu.gen.mlg import compress_layer as mlg_compress
from insitu.gen.model import Layer, ModelError, load_model, save_model
from insitu.gen.smartdeal import SdConfig
from insitu.gen.smartdeal import compress_layer as sd_compress


def trained_like(rng, shape, rank=None):
    """Weights with the structure trained filters have: correlated, low effective rank."""
    cout = shape[0]
    fan = int(np.prod(shape[1:]))
    rank = rank or max(2, min(cout, fan) // 4)
    w = rng.standard_normal((cout, rank)) @ rng.standard_normal((rank, fan))
    w += 0.1 * rng.standard_normal((cout, fan))
    return (w / np.sqrt(fan)).reshape(shape)


LAYERS = [("conv3x3", (16, 24, 3, 3)), ("conv3x3", (8, 3, 3, 3)), ("conv3x3", (4, 70, 3, 3)),
          ("linear", (12, 40)), ("conv1x1", (10, 20, 1, 1))]


# -- golden SmartDeal stream and rebuild ----------------------------------------------------

def test_sd_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    fmt = SdFormat()
    m = rng.random((50, 3)) < 0.5
    s = rng.integers(0, 2, (50, 3)) * m
    e = rng.integers(0, fmt.expu_max + 1, (50, 3)) * m
    words, bits = golden.sd_pack(m, s, e, fmt)
    assert bits == 50 + 3 * m.any(axis=1).sum() + 5 * m.sum()
    assert len(words) == -(-bits // 32)
    M, S, E, err = golden.sd_unpack(words, 50, fmt)
    assert (M == m).all() and (S == s).all() and (E == e).all() and not err.any()


def test_sd_unpack_flags_bad_exponent_and_short_stream():
    fmt = SdFormat()
    words, _ = golden.sd_pack([[1, 0, 1]], [[0, 0, 1]], [[15, 0, 3]], fmt)   # 15 > 13
    M, S, E, err = golden.sd_unpack(words, 1, fmt)
    assert err.tolist() == [1] and M.tolist() == [[0, 0, 1]] and E[0, 2] == 3
    with pytest.raises(ValueError, match=r"^Coefficient stream ends after 32 bits, inside row \d+$"):
        golden.sd_unpack(words, 40, fmt)


def test_sd_rebuild_is_the_matrix_product():
    rng = np.random.default_rng(1)
    B = rng.integers(-127, 128, (3, 3))
    m = rng.integers(0, 2, (9, 3))
    s = rng.integers(0, 2, (9, 3))
    e = rng.integers(0, 14, (9, 3))
    W = golden.sd_rebuild(B, m, s, e)
    for r in range(9):
        for k in range(3):
            assert W[r, k] == sum(m[r, j] * (-1) ** s[r, j] * 2 ** e[r, j] * B[j, k] for j in range(3))
    assert golden.sd_weight_bits(8, SdFormat()) == 23


def test_requant_shift_rounds_half_up():
    assert golden.requant_shift([5, -5, 6, -6, 7, 1000], 1).tolist() == [3, -2, 3, -3, 4, 127]
    assert golden.requant_shift([-1000], 0).tolist() == [-127]


@pytest.mark.parametrize("kw, msg", [
    ({"e_min": 3, "e_max": 1}, r"^SmartDeal e_max must be >= e_min, not 1 < 3$"),
    ({"word_bits": 12}, r"^SmartDeal word_bits must be a multiple of 8 and at least 19, not 12$"),
])
def test_bad_sd_format(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SdFormat(**kw)


# -- SmartDeal compressor --------------------------------------------------------------------

@pytest.mark.parametrize("kind, shape", LAYERS)
def test_sd_compress_shapes_and_codes(kind, shape):
    rng = np.random.default_rng(2)
    layer = Layer("l", kind, trained_like(rng, shape))
    sd = sd_compress(layer)
    assert sd.weight_float().shape == shape
    cfg = sd.config
    nz = sd.elemmask != 0
    assert (sd.expu[nz] >= 0).all() and (sd.expu[nz] <= cfg.e_max - cfg.e_min).all()
    assert (np.abs(sd.basis) <= 127).all()
    if kind == "conv3x3":
        cin = shape[1]
        assert sd.rows == [3 * min(64, cin - s) for s in range(0, cin, 64)]
    # int8 mode: every filter's requantised weights fit int8 and stay close to exact.
    w8 = sd.weight_int8()
    assert np.abs(w8).max() <= 127
    err = np.linalg.norm(sd.weight_float() - layer.weight) / np.linalg.norm(layer.weight)
    assert err < 0.3


def test_sd_1x1_padding_table():
    """1x1/FC rows: padded to a multiple of 3 and split as algorithms.md 2.1's table."""
    from insitu.gen.smartdeal import _split
    for cin, (splits, n) in {16: (1, 6), 64: (1, 22), 512: (1, 171), 960: (2, 160),
                             1280: (3, 143), 4096: (8, 171)}.items():
        _, rows = _split(Layer("l", "linear", np.zeros((1, cin))))
        assert rows == [n] * splits


def test_sd_error_shrinks_as_budget_grows():
    rng = np.random.default_rng(3)
    layer = Layer("l", "conv3x3", trained_like(rng, (32, 64, 3, 3)))
    errs, bits = [], []
    for thr in (0.2, 0.08, 0.02, 0.002):
        sd = sd_compress(layer, SdConfig(threshold=thr))
        errs.append(np.linalg.norm(sd.weight_float() - layer.weight) / np.linalg.norm(layer.weight))
        bits.append(sum(sd.storage_bits().values()))
    assert bits == sorted(bits) and errs == sorted(errs, reverse=True), (bits, errs)


def test_sd_structured_pruning_zeroes_shared_rows():
    rng = np.random.default_rng(4)
    layer = Layer("l", "conv3x3", trained_like(rng, (64, 16, 3, 3)))
    sd = sd_compress(layer, SdConfig(prune=0.5, group=32))
    for g in (slice(0, 32), slice(32, 64)):
        dead = ~sd.elemmask[g].any(axis=(0, 2))
        assert dead.sum() >= 24                     # at least half of the 48 rows, group-wide


@pytest.mark.parametrize("scheme", ["smartdeal", "mlg", "asm"])
def test_accounting_matches_image_byte_for_byte(scheme):
    rng = np.random.default_rng(5)
    layers = [Layer(f"l{i}", k, trained_like(rng, s)) for i, (k, s) in enumerate(LAYERS)]
    compressed, report = compress_model(layers, scheme)
    total = 0
    for c, row in zip(compressed, report["layers"]):
        image = c.image()
        for part, bits in c.storage_bits().items():
            assert len(image[part]) * 8 == bits, (c.name, part)
        assert row["weight_bits"] == sum(len(b) for b in image.values()) * 8
        total += row["weight_bits"]
    assert report["weight_bits"] == total
    assert report["dense_int8_bits"] == 8 * report["weights"]
    assert report["memory_ratio_vs_fp32"] == pytest.approx(4 * report["memory_ratio_vs_int8"])


def test_sd_image_decodes_to_the_codes():
    rng = np.random.default_rng(6)
    sd = sd_compress(Layer("l", "conv3x3", trained_like(rng, (4, 8, 3, 3))))
    raw = sd.image()["coef"]
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
    assert words[0] == sd.elemmask.shape[0] * sd.elemmask.shape[1]          # header: row count
    M, S, E, err = golden.sd_unpack(words[1:], words[0], sd.config.fmt)
    assert (M == sd.elemmask.reshape(-1, 3)).all() and not err.any()
    assert (E == sd.expu.reshape(-1, 3)).all() and (S == sd.sgn.reshape(-1, 3)).all()


# -- MLG ----------------------------------------------------------------------------------------

def test_odd_quantizer_grid():
    codes, step = quantize_odd(np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), 3)
    assert (golden.odd(codes, 3) * step).tolist() == pytest.approx([-1, -3 / 7, 1 / 7, 3 / 7, 1])


@pytest.mark.parametrize("kind, shape, cfg, level1, level2", [
    ("conv3x3", (64, 64, 3, 3), MlgConfig(2, 44, 3, 6, 3), True, True),
    ("conv3x3", (8, 3, 3, 3), MlgConfig(2, 44, 3, 6, 3), True, False),   # Bo >= Cout: no V
    ("conv1x1", (10, 20, 1, 1), MlgConfig(2, 44, 3, 6, 3), False, True),  # Bo -> 0.9 min
    ("linear", (40, 30), MlgConfig(2, 8, 4, 6, 4), False, True),
])
def test_mlg_level_rules(kind, shape, cfg, level1, level2):
    rng = np.random.default_rng(7)
    m = mlg_compress(Layer("l", kind, trained_like(rng, shape)), cfg)
    assert (m.level1, m.level2) == (level1, level2)
    if kind == "conv1x1":
        assert m.Bo == 9
    W = m.weight_int()
    w1b, wb = golden.mlg_bits(cfg.Bi, m.Bo, cfg.qb, cfg.qu, cfg.qv, level1, level2)
    assert np.abs(W).max() < 2 ** (wb - 1)


def test_mlg_generate_matches_naive_loops():
    rng = np.random.default_rng(8)
    Bo, Bi, Cin, K2, Cout = 3, 2, 4, 9, 5
    Bc = rng.integers(0, 8, (Bo, Bi, K2))
    Uc = rng.integers(0, 64, (Bo, Cin, Bi))
    Vc = rng.integers(0, 8, (Cout, Bo))
    W = golden.mlg_generate(Bc, Uc, Vc, 3, 6, 3, Cout, Cin, K2)
    for co in range(Cout):
        for c in range(Cin):
            for t in range(K2):
                ref = sum((2 * Vc[co, o] - 7) * sum((2 * Uc[o, c, b] - 63) * (2 * Bc[o, b, t] - 7)
                                                    for b in range(Bi)) for o in range(Bo))
                assert W[co, c, t] == ref


def test_mlg_error_shrinks_as_budget_grows():
    rng = np.random.default_rng(9)
    layer = Layer("l", "conv3x3", trained_like(rng, (48, 32, 3, 3), rank=12))
    errs = []
    for cfg in (MlgConfig(1, 4, 2, 3, 2), MlgConfig(2, 12, 3, 6, 3), MlgConfig(3, 24, 6, 8, 6)):
        m = mlg_compress(layer, cfg)
        errs.append(np.linalg.norm(m.weight_float() - layer.weight) / np.linalg.norm(layer.weight))
    assert errs == sorted(errs, reverse=True), errs


# -- model files and the CLI ---------------------------------------------------------------------

def test_model_roundtrip_and_kinds(tmp_path):
    rng = np.random.default_rng(10)
    layers = [Layer("c1", "conv3x3", rng.standard_normal((4, 3, 3, 3)), np.zeros(4)),
              Layer("fc", "linear", rng.standard_normal((5, 36)))]
    save_model(tmp_path / "m.npz", layers)
    back = load_model(tmp_path / "m.npz")
    assert [(l.name, l.kind) for l in back] == [("c1", "conv3x3"), ("fc", "linear")]
    np.savez(tmp_path / "plain.npz", **{"a.weight": np.ones((2, 3, 1, 1)), "b.weight": np.ones((2, 2))})
    assert [l.kind for l in load_model(tmp_path / "plain.npz")] == ["conv1x1", "linear"]


@pytest.mark.parametrize("arrays, msg", [
    ({"a.weight": np.full((2, 2), np.nan)}, r"^Layer 'a': weight contains NaN or inf$"),
    ({"a.weight": np.ones((2, 2, 5, 5))}, r"^Layer 'a': only 3x3 and 1x1 convolutions are supported, not kernel 5x5$"),
    ({"a.weight": np.ones((2,))}, r"^Layer 'a': weight must be 2-D \(Linear\) or 4-D \(Conv2d\), not shape \(2,\)$"),
    ({"a.weight": np.ones((2, 2)), "a.bias": np.ones(3)}, r"^Layer 'a': bias shape \(3,\) does not match 2 outputs$"),
    ({"a.bias": np.ones(3)}, r"^Layer 'a' has no weight$"),
    ({"weights": np.ones(3)}, r"^Model file '.*': key 'weights' is not '<layer>\.weight'"),
    ({"a.weight": np.ones((2, 2)), "a.kind": np.array("conv3x3")}, r"^Layer 'a': kind 'conv3x3' does not match weight shape \(2, 2\)$"),
])
def test_bad_models(tmp_path, arrays, msg):
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ModelError, match=msg):
        load_model(tmp_path / "m.npz")


def test_truncated_model_file(tmp_path):
    np.savez(tmp_path / "m.npz", **{"a.weight": np.ones((20, 20))})
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"^Model file '.*t\.npz' is not a readable \.npz file"):
        load_model(tmp_path / "t.npz")


def test_make_config_errors():
    assert make_config("smartdeal", {"threshold": "0.05"}).threshold == 0.05
    with pytest.raises(ValueError, match=r"^Scheme 'mlg' has no knob 'Bx' \(knobs: Bi, Bo, qb, qu, qv\)$"):
        make_config("mlg", {"Bx": "1"})
    with pytest.raises(ValueError, match=r"^Knob 'Bo' must be a int, not 'many'$"):
        make_config("mlg", {"Bo": "many"})
    with pytest.raises(ValueError, match=r"^Unknown scheme 'zip' \(schemes: asm, smartdeal, mlg, int8\)$"):
        make_config("zip")


@pytest.mark.parametrize("scheme", ["asm", "smartdeal", "mlg"])
def test_cli_compress(tmp_path, capsys, scheme):
    rng = np.random.default_rng(11)
    save_model(tmp_path / "m.npz", [Layer("c1", "conv3x3", trained_like(rng, (8, 8, 3, 3))),
                                    Layer("fc", "linear", trained_like(rng, (10, 72)))])
    assert cli.main(["compress", str(tmp_path / "m.npz"), "--scheme", scheme, "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "compress_report.json").read_text())
    for key in ("scheme", "layers", "weights", "weight_bits", "bits_per_weight", "dense_int8_bits",
                "memory_ratio_vs_int8", "memory_ratio_vs_fp32", "rel_error"):
        assert key in report
    assert report["scheme"] == scheme and report["weights"] == 8 * 8 * 9 + 720
    assert "total" in capsys.readouterr().out


def test_cli_compress_bad_model_leaves_nothing(tmp_path, capsys):
    np.savez(tmp_path / "m.npz", **{"a.weight": np.full((2, 2), np.inf)})
    assert cli.main(["compress", str(tmp_path / "m.npz"), "--scheme", "mlg", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "insitu: error: Layer 'a': weight contains NaN or inf"
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
