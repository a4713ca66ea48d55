"""Amaranth components (ASM MAC array, ...)."""
