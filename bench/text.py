"""TTS chunking scales linearly: a 0.5 MB and a 5 MB script, chunked with the default limits.

A ratio of the two times near 10 is linear; the chunker used to copy the rest of the script for every
chunk (quadratic: 5 MB took 13 s). Not a test: timings depend on the machine.
"""

from __future__ import annotations

import time

from pipeline.limits import load_limits
from pipeline.stages.sync import max_job_seconds
from pipeline.stages.text import chunk_text

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests; does it sleep? Yes. "


def _chunk_seconds(size: int) -> tuple[float, int]:
    limits = load_limits()  # read before the clock starts
    script = (SENTENCE * (size // len(SENTENCE) + 1))[:size]
    start = time.perf_counter()
    chunks = chunk_text(script, limits.tts_max_chars, max_job_seconds(limits))
    return time.perf_counter() - start, len(chunks)


def main() -> None:
    small, n_small = _chunk_seconds(500_000)
    big, n_big = _chunk_seconds(5_000_000)
    print(
        f"0.5 MB: {small:.2f} s ({n_small} chunks); 5 MB: {big:.2f} s ({n_big} chunks); "
        f"ratio {big / small:.1f} (10 = linear)"
    )


if __name__ == "__main__":
    main()
