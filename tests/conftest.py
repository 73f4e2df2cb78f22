"""Suite-wide settings. Hypothesis runs without a per-example deadline: the suite runs beside heavy media
work on 2 cores, and a test here asserts properties, never how long something took."""

from hypothesis import settings

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
