"""Code shared by every Fano process: protocol, errors, config, clock, service base, broker client.

Imports nothing from ``services`` or ``cli``.
"""
