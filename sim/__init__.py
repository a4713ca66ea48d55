"""cocotb testbenches (tb_*.py) and simulator runner helpers."""
