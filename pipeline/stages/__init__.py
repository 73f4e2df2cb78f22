"""The pipeline's stages, one module each, in data-flow order:

probe -> conform_video / conform_audio / text -> sync -> (providers) -> mux -> verify -> handoff

Each stage plans with a pure function (data in, a plan with reasons out) and executes thinly.
"""
