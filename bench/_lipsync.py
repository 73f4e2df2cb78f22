"""`lipsync` exactly as shipped, except that a refused create is tried again after 0.5-1 s instead of 10-30 s.

`make chaos` refuses creates on purpose (PixVerse 500044, 429 storms) in every round; at the real providers'
pace a round would spend minutes asleep. Run as `python -m bench._lipsync ARGS` (bench/chaos.py does).
"""

from pipeline.cli import main
from pipeline.providers.http import RetryPolicy

assert isinstance(RetryPolicy.__dict__.get("for_refused_creates"), classmethod), "the create retry policy moved"
RetryPolicy.for_refused_creates = classmethod(lambda cls: cls(attempts=10, initial=0.5, maximum=1.0))

if __name__ == "__main__":
    main(prog_name="lipsync")
