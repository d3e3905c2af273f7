"""ModuleService.world_interval: a check meant to run every so many world seconds, in real seconds."""
from services.modules.base import ModuleService
from shared.clock import Clock


class _Mod(ModuleService):
    def __init__(self, clock):   # no config or sockets: only the clock matters here
        self.clock = clock


def test_a_world_interval_is_scaled_and_kept_within_its_real_bounds():
    plain = _Mod(Clock())
    assert plain.world_interval(75.0, 0.5, 30.0) == 30.0       # scale 1: capped by the real maximum
    assert plain.world_interval(10.0, 0.5, 30.0) == 10.0
    soak = _Mod(Clock(scale=336.0, origin=0.0))
    assert soak.world_interval(3360.0, 0.5, 30.0) == 10.0      # 3360 world s = 10 real s at x336
    assert soak.world_interval(75.0, 0.5, 30.0) == 0.5         # 0.22 real s: raised to the floor
