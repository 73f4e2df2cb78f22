"""A local emulator of the four providers' protocols (PixVerse Platform, AI/ML API, useapi.net, fal.ai)."""

from .faults import Faults
from .server import Emulator
from .state import EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings", "Faults"]
