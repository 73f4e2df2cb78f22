"""A local emulator of the four providers' protocols (PixVerse Platform, AI/ML API, useapi.net, fal.ai).

    with Emulator(EmulatorSettings(latency_s=0.5)) as emu:
        emu.base_urls / emu.env()                 where a client should point
        emu.faults("fal").drop_after_create = 1   inject trouble (see Faults)
        emu.accepted_creates("fal")               jobs that exist and would be billed

Protocol details and the choices made where the docs are silent: docs/DESIGN.md ("Emulator ... details").
"""

from .faults import Faults
from .server import Emulator
from .state import EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings", "Faults"]
