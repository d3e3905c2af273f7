"""``fanoctl``: the operator's command line, a thin layer over :mod:`shared.client`."""
