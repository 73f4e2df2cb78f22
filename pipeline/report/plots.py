"""The report's plots, drawn by matplotlib into SVG text (inlined in the page: no file, no network)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH_IN, HEIGHT_IN = 7.5, 2.2


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _figure() -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    return plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))


def envelope(
    pcm: npt.NDArray[np.float64], rate: int, points: int = 800
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(times, peak level per bucket): a waveform outline a page can hold."""
    if len(pcm) == 0:
        return np.zeros(0), np.zeros(0)
    buckets = np.array_split(np.abs(pcm), min(points, len(pcm)))
    times = np.cumsum([0] + [len(b) for b in buckets[:-1]]) / rate
    return times, np.array([b.max() for b in buckets])


def waveform_svg(
    master: npt.NDArray[np.float64] | None, provider: npt.NDArray[np.float64] | None, rate: int, offset_s: float | None
) -> str:
    """The master voice over the provider's sound (what the lips were synced to), with the measured offset."""
    fig, ax = _figure()
    for pcm, label, sign in ((master, "master", 1), (provider, "provider", -1)):
        if pcm is not None:
            t, peak = envelope(pcm, rate)
            ax.fill_between(t, 0, sign * peak, step="mid", alpha=0.6, label=label)
    title = "master (up) vs provider audio (down)"
    if offset_s is not None:
        title += f": offset {offset_s * 1000:+.1f} ms"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("seconds", fontsize=8)
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)


def mouth_svg(score: dict[str, Any]) -> str:
    """Mouth opening and speech envelope per frame (each scaled 0..1), with the lip-sync figures."""
    fig, ax = _figure()
    fps = score.get("fps") or 25.0
    opening = np.array([np.nan if v is None else v for v in score.get("opening", [])], dtype=float)
    env = np.array(score.get("envelope", []), dtype=float)
    if np.any(~np.isnan(opening)):
        lo, hi = np.nanmin(opening), np.nanmax(opening)
        ax.plot(np.arange(len(opening)) / fps, (opening - lo) / ((hi - lo) or 1), label="mouth opening", lw=1)
    if len(env):
        ax.plot(np.arange(len(env)) / fps, env, label="speech envelope", lw=1, alpha=0.8)
    if score.get("status") == "ok":
        title = (
            f"segment {score['segment']}: offset {score['offset_frames']:+d} frames, r={score['correlation']:.2f}, "
            f"confidence {score['confidence']:.1f} sd"
        )
    else:
        title = f"segment {score.get('segment', 0)}: {score.get('status')}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("seconds", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    return _svg(fig)
