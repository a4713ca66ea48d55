"""Mutation testing of ``rtl/``: plant one operator or constant change at a time in a copy of
the tree and run the tests that cover that file; a mutant the tests fail on is *killed*.

Mutations (on the source text, so line numbers stay):

- arithmetic and bit operators: ``+`` <-> ``-``, ``<<`` <-> ``>>``, ``&`` <-> ``|``,
  ``^`` -> ``|``;
- comparisons: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``;
- integer constants off by one: ``n`` -> ``n + 1`` (and ``n - 1`` for ``n > 0``).

Not mutated: docstrings, type annotations (never evaluated: ``from __future__ import
annotations``), error messages (f-strings, ``raise`` and ``assert`` statements),
parameter checks (an ``if`` whose body raises), parameter defaults and width arguments
(``Signal``, ``range``, ``signed``, ``unsigned``, ``ceil_log2``, ``In``, ``Out``: a wider
register is an equivalent mutant, not a test gap).

:data:`TESTS` maps each file to its tests (Amaranth-simulator units, the engine benches, the
formal proofs); a mutant whose tests time out counts as killed (it hangs the design).
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Mutant", "TESTS", "mutants_of", "run_mutant", "RTL_FILES"]

ROOT = Path(__file__).resolve().parents[1]

#: The engine's tests without their stall variants (the bench drives the same design), the
#: graph benches and the proofs of the post-processor's and controller's arithmetic.
_ENGINE = ["tests/test_engine.py", "tests/test_engine_graph.py", "tests/test_formal.py",
           "tests/test_cycles.py", "tests/test_flash_engine.py", "-k",
           "False or switch or single or levels or load_stream or planted or requant or "
           "avgpool or maxpool or invalid or weight_port_in_rtl or bank or "
           "(flash_engine_bit_exact and asm)"]
#: The tests that cover each file of ``rtl/`` (pytest arguments).
TESTS = {
    "asm.py": ["tests/test_rtl_asm.py", "tests/test_formal.py", "tests/test_engine_graph.py",
               "-k", "asm or Asm or product"],
    "pow2.py": ["tests/test_rtl_pow2.py", "tests/test_formal.py", "-k", "pow2 or decoder"],
    "weightgen.py": ["tests/test_rtl_weightgen.py", "tests/test_formal.py", "-k",
                     "sd_ or weight or mlg or generator"],
    "baseline.py": ["tests/test_rtl_baseline.py", "tests/test_engine.py",
                    "tests/test_engine_graph.py", "-k",
                    "int8 or baseline or exact or pow2 or lane"],
    # the MAC pipeline every array shares: its unit tests (golden under stalls, overrun, bad
    # codes, throughput, back-pressure) through the ASM and baseline arrays
    "mac.py": ["tests/test_rtl_asm.py", "tests/test_rtl_baseline.py"],
    "crc.py": ["tests/test_formal.py", "tests/test_rtl_components.py", "-k", "crc"],
    "uart.py": ["tests/test_boards.py", "-k", "uart_loopback or uart_rx or divisor"],
    "flash.py": ["tests/test_flash.py", "tests/test_flash_engine.py"],
    "weightstream.py": ["tests/test_flash_engine.py"],
    "emit.py": ["tests/test_cli.py", "-k", "compile or verilog or simulate"],
    # the SPRAM-style (empty at power-up) weight memory is built by the board tests only
    "weightmem.py": _ENGINE[:-2] + ["tests/test_boards.py", "-k", _ENGINE[-1] + " or uart_bit_exact"],
}
RTL_FILES = sorted(p.name for p in (ROOT / "rtl").glob("*.py") if p.name != "__init__.py")

_WIDTH_CALLS = {"Signal", "range", "signed", "unsigned", "ceil_log2", "like", "In", "Out"}
_BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.LShift: ("<<", ">>"),
           ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"),
           ast.BitXor: ("^", "|")}
_CMPOPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="),
           ast.GtE: (">=", ">"), ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}


@dataclass(frozen=True)
class Mutant:
    file: str
    line: int
    col: int          # start of the replaced text on that line
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.file}:{self.line}: {self.old} -> {self.new}"


#: Mutants that no input can tell from the original, with the reason: they are not run and
#: not counted in the kill rate.  Keyed by :func:`key_of` (file, the stripped source line, the
#: column in it, old, new), so an entry follows its line when the file changes around it and
#: lapses when the line itself changes.
EQUIVALENT = {
    ("baseline.py", "self._pbits = signed_bits_for(-max(-lo, hi) * (1 << (weight_bits - 1)),",
     47, "1", "0"):
        "the product width's lower bound; the (equal) upper bound on the next line sets it",
    ("baseline.py", "self._pbits = signed_bits_for(-max(-lo, hi) * (1 << (weight_bits - 1)),",
     67, "1", "2"):
        "the product width's lower bound; the (equal) upper bound on the next line sets it",
    ("baseline.py", "self._pbits = signed_bits_for(-max(-lo, hi) * (1 << (weight_bits - 1)),",
     65, "-", "+"):
        "the product width's lower bound four times too large: a wider product register",
    ("control.py", "with m.If(~active & (pending | ~first) & ~self.full.bit_select(self.slot, 1)):",
     74, "1", "2"):
        "a 2-bit slice of `full`: its upper bit meets zero-extended 1-bit operands in the `&`",
    ("control.py", 'if any(ly.kind == "maxpool" for ly in layers):', 15, "==", "!="):
        "an elaboration guard: the max-pool logic is built for nets without a max pool too, "
        "where the per-layer flag keeps it idle (logic, not function)",
    ("crc.py", "CRC32 = CrcSpec(32, 0xEDB88320, 0xFFFFFFFF, True, 0xFFFFFFFF)", 16, "32", "33"):
        "a 33-bit CRC-32 register: the CRC is reflected (shifts right), its init, polynomial "
        "and final XOR have no bit 32, so the extra top bit stays 0 and the low 32 bits are "
        "the CRC (the CRC-32 step proof also holds: its bit 32 shifts into bit 24 in both)",
    ("emit.py", "x_u8 = np.random.default_rng(0).integers(0, 256, (8, "
                "int(np.prod(plan.input_shape))))", 50, "8", "7"):
        "seven default random test vectors in a compiled folder instead of eight: the "
        "hardware is the same and any number of vectors checks it",
    ("post.py", 'k("s0"): (1, v3[k("s0")]), k("sh"): (unsigned(S_BITS), v3[k("sh")])}', 10,
     "1", "2"):
        "a 2-bit register for the 1-bit rounding flag after the residual sum: zero-extended, "
        "only its truth is used",
    ("fill.py", "m.d.comb += self.t_wr.en.eq((1 << L) - 1)", 29, "1", "2"):
        "an all-ones write mask one bit wider than the L-bit enable it is truncated to",
    ("mac.py", '"bad_code": 1,', 12, "1", "2"):
        "a 2-bit `bad_code` field: only its truth is used, and the layout places the fields",
    ("uart.py", "m.d.sync += timer.eq(d // 2 - 1)", 30, "1", "0"):
        "the receiver samples one clock later inside each bit: at the boards' divisors (260 "
        "at 30 MHz, 115200 baud) 0.4% of a bit, still mid-bit",
    ("uart.py", "m.submodules.sync = FFSynchronizer(self.rx, pin, init=1)", 54, "1", "0"):
        "the synchroniser shows a low line for two cycles after reset: the receiver's start-bit "
        "check (the line must still be low mid-bit) rejects it as a glitch",
    ("util.py", "with (m.Case(i) if i < len(layers) - 1 else m.Default()):", 21, "<", "<="):
        "the last layer as a Case instead of the Default: the index never leaves its range",
    ("util.py", "with (m.Case(i) if i < len(layers) - 1 else m.Default()):", 35, "-", "+"):
        "the last layer as a Case instead of the Default: the index never leaves its range",
    ("util.py", "with (m.Case(i) if i < len(layers) - 1 else m.Default()):", 37, "1", "0"):
        "the last layer as a Case instead of the Default: the index never leaves its range",
    ("weightgen.py", "m.d.sync += p.w[k].eq(Mux(r > 127, 127, Mux(r < -127, -127, r)))", 49,
     "127", "126"):
        "saturating from r > 126 to 127 gives 127 for r = 127 as well",
    ("weightgen.py", '"err": 1, "last": 1, "end": 1})', 18, "1", "2"):
        "a 2-bit `err` field: only its truth is used, and the layout places the fields",
    ("weightmem.py", "MEM_POST: max(2, len(plan.post_words)), MEM_COEF: max(2, "
     "len(plan.coef_words))}", 14, "2", "1"):
        "the depth floor: a one-word post memory works the same (a one-output linear net "
        "ran bit-exact with this mutant)",
    ("weightport.py", "m.d.sync += self.level.eq(Mux(after > self.capacity, self.capacity, "
     "after))", 36, ">", ">="):
        "saturating at after >= capacity gives capacity for after = capacity as well",
    ("emit.py", "x_u8 = np.random.default_rng(0).integers(0, 256, (8, "
     "int(np.prod(plan.input_shape))))", 29, "0", "1"):
        "the seed of the default random test vectors of a compiled folder: any seed gives "
        "valid vectors (each checked against the golden model)",
    ("emit.py", "x_u8 = np.random.default_rng(0).integers(0, 256, (8, "
     "int(np.prod(plan.input_shape))))", 41, "0", "1"):
        "the default random test vectors drawn from 1..255 instead of 0..255: still valid "
        "inputs, each checked against the golden model",
    ("asm.py", "m.d.comb += is_bad.eq(Const(invalid_mask, 1 << qbits).bit_select(raw, 1))",
     42, "1", "2"):
        "a 2-bit slice assigned to the 1-bit `is_bad`: only its first bit is kept",
    ("baseline.py", 'return data.StructLayout({"exp": exp_bits, "sign": 1, "zero": 1})', 51,
     "1", "2"):
        "a 2-bit `sign` field: only its truth is used, and the layout places the fields",
    ("flash.py", "sample = self.dq_i[:4] if self.quad else self.dq_i[1]", 20, "4", "5"):
        "slicing five bits of the 4-bit DQ input gives the same four",
    ("mac.py", '"overrun": 1,', 11, "1", "2"):
        "a 2-bit `overrun` field: only its truth is used, and the layout places the fields",
    ("post.py", "aw = max(1, ceil_log2(act_depth))", 9, "1", "0"):
        "the address width's floor: an activation memory holds at least two words, so "
        "ceil_log2 is at least 1",
    ("weightmem.py", "return {MEM_WEIGHT: max(2, len(plan.weight_words)), MEM_AUX: max(2, "
     "len(plan.aux_words)),", 65, "2", "3"):
        "the depth floor one higher: a memory one word deeper than its image (never addressed)",
    ("weightmem.py", "return {MEM_WEIGHT: max(2, len(plan.weight_words)), MEM_AUX: max(2, "
     "len(plan.aux_words)),", 24, "2", "1"):
        "the depth floor: a one-word memory works the same as a two-word one (checked by "
        "running the same mutant of the post memory)",
    ("baseline.py", "top = max(-lo, hi) << ((1 << exp_bits) - 1)", 24, "1", "2"):
        "a power-of-2 product bound twice too large: a wider accumulator",
    ("asm.py", '"last": 1,', 8, "1", "2"):
        "a 2-bit `last` field: only its truth is used, packed as 0 or 1",
    ("actmem.py", "rp.en.eq(~w_here & sum(r_here).bool()),", 17, "&", "|"):
        "the bank also reads while no reader wants it: held data is only taken the cycle "
        "after a reader's own read (power, not function)",
}


def key_of(mut: Mutant, root: Path = ROOT) -> tuple:
    """``(file, stripped line, column in it, old, new)``: the :data:`EQUIVALENT` key."""
    line = (root / "rtl" / mut.file).read_text().splitlines()[mut.line - 1]
    indent = len(line) - len(line.lstrip())
    return (mut.file, line.strip(), mut.col - indent, mut.old, mut.new)


def record(mut: Mutant, source: str | None = None) -> dict:
    """A result's fields naming ``mut``: position, the source line's text and indent (so a
    rerun finds it when the line moves), its description."""
    if source is None:
        source = (ROOT / "rtl" / mut.file).read_text()
    line = source.splitlines()[mut.line - 1]
    return {**asdict(mut), "source": line.strip(), "indent": len(line) - len(line.lstrip()),
            "mutant": mut.describe()}


def relocate(rec: dict, root: Path = ROOT) -> Mutant | None:
    """The mutant of an earlier run's ``rec`` in today's file: at its line, or, when the
    record names its source line (``source``) and that line moved, at the one line with the
    same text; ``None`` when it is gone."""
    path = root / "rtl" / rec["file"]
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    mut = Mutant(rec["file"], rec["line"], rec["col"], rec["old"], rec["new"])
    text = rec.get("source")
    if text is None:
        return mut
    if 0 < mut.line <= len(lines) and lines[mut.line - 1].strip() == text:
        return mut
    hits = [i for i, ln in enumerate(lines, 1) if ln.strip() == text]
    if len(hits) != 1:
        return None
    line = lines[hits[0] - 1]
    col = mut.col - rec.get("indent", 0) + len(line) - len(line.lstrip())
    return Mutant(mut.file, hits[0], col, mut.old, mut.new)


def equivalent(mut: Mutant, root: Path = ROOT) -> str:
    """Why ``mut`` is equivalent (:data:`EQUIVALENT`), or ``""``."""
    return EQUIVALENT.get(key_of(mut, root), "")


def tests_for(name: str) -> list[str]:
    return TESTS.get(name, _ENGINE)


def _skip_nodes(tree) -> set:
    """Nodes whose subtrees are not mutated (messages, asserts, raises, width arguments,
    annotations, docstrings)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.JoinedStr, ast.Assert, ast.Raise)):
            skip.update(ast.walk(node))
        elif isinstance(node, ast.If) and node.body and isinstance(node.body[0], ast.Raise):
            skip.update(ast.walk(node.test))           # a parameter check: its own tests
        elif isinstance(node, ast.arg) and node.annotation is not None:
            skip.update(ast.walk(node.annotation))       # annotations are never evaluated
        elif isinstance(node, ast.arguments):            # default values of parameters
            for d in node.defaults + [d for d in node.kw_defaults if d is not None]:
                skip.update(ast.walk(d))
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) \
                else None
            if name in _WIDTH_CALLS:
                for a in node.args + [k.value for k in node.keywords]:
                    skip.update(ast.walk(a))
        if isinstance(node, ast.AnnAssign):
            skip.update(ast.walk(node.annotation))
        if isinstance(node, ast.FunctionDef) and node.returns is not None:
            skip.update(ast.walk(node.returns))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            skip.update(ast.walk(node.body[0]))
    return skip


def _find_op(lines, start, end, token) -> tuple[int, int] | None:
    """``(line, col)`` of the single ``token`` between two positions (1-based lines)."""
    (l0, c0), (l1, c1) = start, end
    hits = []
    for ln in range(l0, l1 + 1):
        text = lines[ln - 1]
        lo = c0 if ln == l0 else 0
        hi = c1 if ln == l1 else len(text)
        seg = text[lo:hi]
        i = seg.find(token)
        while i >= 0:
            # not part of a longer operator (<<= , <=, ==, >>)
            before = seg[i - 1] if i > 0 else " "
            after = seg[i + len(token)] if i + len(token) < len(seg) else " "
            if before not in "<>=!" and after not in "<>=":
                hits.append((ln, lo + i))
            i = seg.find(token, i + 1)
    return hits[0] if len(hits) == 1 else None


def mutants_of(path: Path) -> list[Mutant]:
    """Every mutant of one source file."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    skip = _skip_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            old, new = _BINOPS[type(node.op)]
            pos = _find_op(lines, (node.left.end_lineno, node.left.end_col_offset),
                           (node.right.lineno, node.right.col_offset), old)
            if pos:
                out.append(Mutant(path.name, pos[0], pos[1], old, new))
        elif isinstance(node, ast.Compare):
            prev = node.left
            for op, right in zip(node.ops, node.comparators):
                if type(op) in _CMPOPS:
                    old, new = _CMPOPS[type(op)]
                    pos = _find_op(lines, (prev.end_lineno, prev.end_col_offset),
                                   (right.lineno, right.col_offset), old)
                    if pos:
                        out.append(Mutant(path.name, pos[0], pos[1], old, new))
                prev = right
        elif isinstance(node, ast.Constant) and type(node.value) is int and \
                node.lineno == node.end_lineno:
            text = lines[node.lineno - 1][node.col_offset:node.end_col_offset]
            out.append(Mutant(path.name, node.lineno, node.col_offset, text, str(node.value + 1)))
            if node.value > 0:
                out.append(Mutant(path.name, node.lineno, node.col_offset, text,
                                  str(node.value - 1)))
    return sorted(set(out), key=lambda m: (m.line, m.col, m.new))


def apply(src: str, mut: Mutant) -> str:
    lines = src.splitlines(keepends=True)
    line = lines[mut.line - 1]
    if line[mut.col:mut.col + len(mut.old)] != mut.old:
        raise ValueError(f"mutant {mut.describe()} does not match the source")
    lines[mut.line - 1] = line[:mut.col] + mut.new + line[mut.col + len(mut.old):]
    return "".join(lines)


def make_tree(dest: Path) -> Path:
    """A copy of the sources and tests (symlinks kept) in which mutants are planted."""
    for d in ("rtl", "gen", "sim", "boards", "src", "tests", "models"):
        shutil.copytree(ROOT / d, dest / d, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def run_mutant(tree: Path, mut: Mutant, timeout: float = 600) -> dict:
    """Plant ``mut`` in ``tree``, run its file's tests, restore; ``{"killed", "seconds", ...}``."""
    target = tree / "rtl" / mut.file
    original = target.read_text()
    target.write_text(apply(original, mut))
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    # its own process group, so a timeout also ends the simulators the tests started
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             *tests_for(mut.file)], cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        killed, status = proc.returncode != 0, proc.returncode
        tail = out.strip().splitlines()[-1:] or [""]
        why = tail[0][:200]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        killed, status, why = True, "timeout", f"tests ran over {timeout:.0f} s"
    finally:
        target.write_text(original)
    return {**record(mut, original), "killed": killed, "status": status,
            "why": why, "seconds": round(time.monotonic() - t0, 1)}


def sample(files, per_file: int, seed: int) -> list[Mutant]:
    """Up to ``per_file`` mutants of each file, drawn with ``seed`` (all when ``per_file``
    is 0)."""
    rng = random.Random(seed)
    out = []
    for name in files:
        muts = mutants_of(ROOT / "rtl" / name)
        out += muts if not per_file or len(muts) <= per_file else rng.sample(muts, per_file)
    return out


def new_tree() -> Path:
    return make_tree(Path(tempfile.mkdtemp(prefix="insitu-mutants-")) / "tree")
