"""Fano's supervised programs; run one with ``python -m services <program>``."""
