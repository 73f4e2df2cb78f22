"""lipsync-pipeline: conform footage, lip-sync it through a PixVerse-model provider, hand off the result."""

__version__ = "0.1.0"
