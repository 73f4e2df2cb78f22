"""Stage: build the final file from the provider's result.

The provider's video stream is copied untouched. The sound is our master audio (what we submitted, before the
provider's lossy re-encode), placed by the offset measured against the provider's returned audio so the lips
still match; TTS jobs (no master) keep the provider's audio (stream-copied, or cut/padded to the video when it
runs more than a frame long or short). Several segments are stitched into one file.

Delivery format (decided in `plan_mux`/`plan_stitch`, reasons recorded):
- AAC-LC in the mp4: the one audio codec every mp4 player decodes (PCM in mp4 is not portable). One encode
  from the master, at 48 kHz in quality (VBR) mode at a high quality (`AAC_QUALITY`), so the only lossy
  generation is ours and it is transparent for dialogue.
- The aligned audio beside the mp4 as PCM WAV (`<name>_audio.wav`), sample-for-sample the length of the
  video: what post-production wants to re-mix without a second lossy generation.
- Shifting is done with audio filters (adelay / atrim, then apad+atrim to the video length) rather than
  `-itsoffset`: it writes real samples, so the result does not depend on how a player treats an mp4 edit list
  or a stream that starts late.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import ffmpeg

from ..errors import InputError, VerificationError
from ..ffmpeg import X264_THREADS, FfmpegRun, Stream, compile_stream, run_ffmpeg
from ..fsutil import atomic_output
from .avsync import OffsetMeasurement, measure_offset
from .probe import MediaProbe, VideoStream, probe, stream_packets

log = logging.getLogger("lipsync.mux")

DELIVERY_RATE = 48000
DEFAULT_FPS = 25.0
"""Frame rate assumed for tolerances and re-encodes when a file does not say its own."""
PICTURE = "V:0"
"""ffmpeg's first video stream that is not an attached picture (cover art is never the video we deliver)."""
AudioSource = Literal["master", "provider", "none"]
AAC_QUALITY = 4
"""ffmpeg's native AAC encoder in quality (VBR) mode, fast coder: about 185 kbit/s for a mono voice, 320 for
stereo. Against the constant 192 kbit/s it replaced, waveform SNR on a speech stem, pink noise with a tone and
a swept tone was 46/31/49 dB against 45/27/46, at 0.3-1x the CPU: constant-rate mode re-encodes frames until
they fit its rate, and on speech that is most of its time (a 120 s stem: 1.6 s against 2.8 s)."""
INDEX_BYTES_PER_PACKET = 48
"""The most an mp4 index spends on one packet: its size, decode delta, composition offset and sync flag, and a
chunk of its own (offset, sample-to-chunk entry). ffmpeg's own runs about 9."""
INDEX_BYTES_FIXED = 64 * 1024
"""Track headers, codec configuration and edit lists, whatever the length."""
AAC_FRAME = 1024


@dataclass(frozen=True)
class AudioFormat:
    """How the delivered audio is written: WAV beside the mp4, AAC inside it."""

    sample_rate: int
    channels: int
    wav_codec: str  # pcm_s16le or pcm_s24le, as deep as the master
    aac_quality: int  # ffmpeg's -q:a for its native AAC encoder (VBR)


@dataclass(frozen=True)
class VideoTiming:
    """A video stream's clock as ffmpeg reads it (see `video_timing`)."""

    time_base: str  # e.g. "1/15360"
    seconds: float  # where the last frame ends
    packets: int  # frames in the stream: what the final's index must hold


@dataclass(frozen=True)
class MuxPlan:
    audio_source: AudioSource
    offset_s: float  # measured: the provider's audio lags our master by this much
    delay_samples: int  # silence put before the audio (offset > 0)
    trim_samples: int  # audio samples dropped from the start (offset < 0)
    total_samples: int  # audio padded/cut to the video's duration (0: stream-copied)
    video_seconds: float
    audio: AudioFormat | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StitchPlan:
    video_mode: Literal["copy", "reencode"]
    segment_seconds: tuple[float, ...]  # each segment's video duration
    segment_samples: tuple[int, ...]  # each segment's audio, cut/padded to exactly its video
    silent: tuple[int, ...]  # segments without any audio: silence of their length
    audio: AudioFormat
    index_bytes: int  # room kept at the front of the final for its index (moov)
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentSound:
    """A segment's sound for `stitch`: the first audio stream of `source`, shifted onto the segment's picture
    (silence put before it, or samples dropped from its start, counted at the delivery rate)."""

    source: Path
    delay_samples: int = 0
    trim_samples: int = 0


@dataclass(frozen=True)
class MuxResult:
    path: Path
    offset_s: float | None  # provider-vs-master offset (None: not measured or not found)
    audio_source: AudioSource
    audio_file: Path | None  # the delivered WAV beside the mp4, if any
    plan: MuxPlan | StitchPlan
    runs: list[FfmpegRun] = field(default_factory=list)
    measurement: OffsetMeasurement | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path.name,
            "offset_s": self.offset_s,
            "audio_source": self.audio_source,
            "audio_file": self.audio_file.name if self.audio_file else None,
            "plan": self.plan.to_dict(),
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "commands": self.commands(),
        }

    def commands(self) -> list[list[str]]:
        """Every ffmpeg command this step ran: the offset measurement's decodes, then the writes."""
        decodes = [list(argv) for argv in self.measurement.commands] if self.measurement else []
        return decodes + [list(run.argv) for run in self.runs]


# ---- decisions (pure) ---------------------------------------------------------------------------


def video_seconds(media: MediaProbe) -> float:
    """The video's duration: frames / fps when both are known for constant-rate video (exact), else as tagged."""
    v = media.video
    if v is None:
        raise VerificationError(f"{media.path}: the provider's result has no video stream")
    if v.frame_count and v.fps and v.frame_rate_mode == "CFR":
        return v.frame_count / v.fps
    seconds = v.duration or media.duration
    if not seconds:
        raise VerificationError(f"{media.path}: the provider's result has no known video duration")
    return seconds


def audio_format(masters: list[MediaProbe]) -> AudioFormat:
    """48 kHz (the video standard), the masters' channel count (up to stereo), 24-bit WAV if any master is deeper
    than 16 bit; AAC at `AAC_QUALITY`."""
    streams = [m.audio for m in masters if m.audio is not None]
    channels = min(2, max((a.channels for a in streams), default=2))
    deep = any((a.bit_depth or 16) > 16 for a in streams)
    return AudioFormat(
        sample_rate=DELIVERY_RATE,
        channels=channels,
        wav_codec="pcm_s24le" if deep else "pcm_s16le",
        aac_quality=AAC_QUALITY,
    )


def plan_mux(
    provider: MediaProbe,
    master: MediaProbe | None,
    offset: OffsetMeasurement | None,
    *,
    video_s: float | None = None,
) -> MuxPlan:
    """Decide which audio goes into the final file and how to shift it into place.

    `video_s`: the video's measured length (`video_timing`); without it, the probe's.
    """
    seconds = video_s if video_s is not None else video_seconds(provider)
    if master is None:
        return _provider_audio_plan(provider, seconds, "TTS job: the provider's audio is the voice")
    if master.audio is None:
        raise InputError(master.path, "master audio has no audio stream")
    if offset is not None and not offset.reliable:
        return _provider_audio_plan(
            provider,
            seconds,
            f"master not found in the provider's audio (correlation {offset.correlation:.2f}): "
            "kept the provider's audio, which the lips were synced to",
        )
    fmt = audio_format([master])
    reasons = [f"master audio re-encoded once to AAC (VBR quality {fmt.aac_quality}) at {fmt.sample_rate} Hz for mp4"]
    measured = 0.0 if offset is None else offset.seconds
    offset_s = round(measured, 6)
    if offset is None:
        reasons.append("provider result has no audio to align to: master placed at 0")
    else:
        reasons.append(
            f"provider audio lags master by {offset_s * 1000:+.1f} ms (correlation {offset.correlation:.2f})"
        )
    shift = round(measured * fmt.sample_rate)  # from the measurement, not its rounded display value
    if shift > 0:
        reasons.append(f"master delayed by {shift} samples")
    elif shift < 0:
        reasons.append(f"first {-shift} master samples dropped")
    return _fitted("master", offset_s, max(shift, 0), max(-shift, 0), seconds, fmt, reasons)


def _fitted(
    source: AudioSource, offset_s: float, delay: int, trim: int, seconds: float, fmt: AudioFormat, reasons: list[str]
) -> MuxPlan:
    total = round(seconds * fmt.sample_rate)
    reasons.append(f"{source} audio padded/cut to the video: {total} samples ({seconds:.3f} s)")
    return MuxPlan(source, offset_s, delay, trim, total, seconds, fmt, tuple(reasons))


def _provider_audio_plan(provider: MediaProbe, seconds: float, why: str) -> MuxPlan:
    """Keep the provider's audio: stream-copied when it is AAC lasting as long as the video (within a frame), else
    cut or padded to the video and encoded once to AAC, so the final's streams agree and play everywhere."""
    if provider.audio is None:
        return MuxPlan("none", 0.0, 0, 0, 0, seconds, None, (why, "the provider's result has no audio"))
    audio_seconds = provider.audio.duration or provider.duration or seconds
    frame = 1.0 / ((provider.video.fps if provider.video else None) or DEFAULT_FPS)
    if provider.audio.codec != "AAC":
        refit = f"provider audio is {provider.audio.codec}: re-encoded to AAC, the codec every mp4 player decodes"
    elif abs(audio_seconds - seconds) > frame:
        refit = f"provider audio lasts {audio_seconds:.3f} s, video {seconds:.3f} s"
    else:
        return MuxPlan("provider", 0.0, 0, 0, 0, seconds, None, (why, "audio stream-copied"))
    return _fitted("provider", 0.0, 0, 0, seconds, audio_format([provider]), [why, refit])


def _copy_compatible(a: VideoStream | None, b: VideoStream | None) -> bool:
    if a is None or b is None:
        return False  # no picture to copy (video_timing refuses such a segment before this)
    keys = (
        "codec",
        "profile",
        "width",
        "height",
        "rotation",
        "bit_depth",
        "chroma_subsampling",
        "pixel_aspect_ratio",
        "scan_type",
    )
    same_rate = a.fps == b.fps or "VFR" in (a.frame_rate_mode, b.frame_rate_mode)
    return same_rate and all(getattr(a, k) == getattr(b, k) for k in keys)


def plan_stitch(segments: list[MediaProbe], audios: list[MediaProbe], timings: list[VideoTiming]) -> StitchPlan:
    """Join segments in order. Each segment's audio is cut/padded to exactly its video duration, with the sample
    counts taken from rounded cumulative end times, so the joined audio never drifts from the joined video.

    Video is stream-copied only when the segments share codec parameters and their streams' time base (the
    concat demuxer does not rescale timestamps between files: a different time base plays at the wrong speed).
    """
    if not segments:
        raise ValueError("stitch needs at least one segment")
    seconds = [t.seconds for t in timings]
    fmt = audio_format(audios)
    ends, total = [], 0.0
    for s in seconds:
        total += s
        ends.append(round(total * fmt.sample_rate))
    samples = tuple(b - a for a, b in zip([0, *ends[:-1]], ends, strict=True))
    first = segments[0].video
    mismatch = [
        s.path.name
        for s, t in zip(segments[1:], timings[1:], strict=True)
        if not _copy_compatible(first, s.video) or t.time_base != timings[0].time_base
    ]
    mode: Literal["copy", "reencode"]
    if mismatch:
        mode, why = "reencode", f"video re-encoded: {', '.join(mismatch)} differ from the first segment"
    else:
        mode, why = "copy", "video stream-copied: all segments share codec, size, frame rate and time base"
    joined = f"{len(segments)} segments, audio joined sample-accurately, one AAC (VBR quality {fmt.aac_quality}) encode"
    frames = sum(t.packets for t in timings) if mode == "copy" else _frames_after_reencode(first, seconds)
    index = index_reserve(frames, sum(samples))
    reasons = [why, joined, f"index written at the front into {index // 1024} KiB kept for it (no second pass)"]
    silent = tuple(i for i, a in enumerate(audios) if a.audio is None)
    if silent:
        reasons.append(f"segments {', '.join(map(str, silent))} have no audio: silence in their place")
    return StitchPlan(mode, tuple(seconds), samples, silent, fmt, index, tuple(reasons))


def _frames_after_reencode(first: VideoStream | None, seconds: list[float]) -> int:
    """Each segment re-timed to the first one's rate (`_reencoded_video`), a frame more at most."""
    fps = (first.fps if first else None) or DEFAULT_FPS
    return sum(math.ceil(s * fps) + 1 for s in seconds)


def index_reserve(video_frames: int, audio_samples: int) -> int:
    """Bytes to keep at the front of an mp4 for its index, so that it is written there once rather than moved
    there by rewriting the whole file (+faststart): the most it can take for these packets."""
    aac_frames = audio_samples // AAC_FRAME + 2  # and the encoder's priming and flush
    return INDEX_BYTES_FIXED + INDEX_BYTES_PER_PACKET * (video_frames + aac_frames)


# ---- execution (thin) ---------------------------------------------------------------------------


def _probe_result(path: Path) -> MediaProbe:
    """A provider's result (or a segment made from one) that we cannot read is a failed generation, not bad input."""
    try:
        return probe(path)
    except InputError as err:
        raise VerificationError(str(err)) from err


def video_timing(path: str | Path) -> VideoTiming:
    """Read the video stream's packets (no decoding): its time base and where its last frame ends.

    Exact for variable frame rates too, where a tagged duration often leaves out the last frame.
    """
    timing = stream_packets(path, PICTURE)
    if timing is None:
        raise VerificationError(f"{path}: no readable video packets")
    return VideoTiming(timing.time_base, timing.end, timing.packets)


def audio_file_for(dst: Path) -> Path:
    """Where the delivered WAV of `dst` goes: beside it, `<stem>_audio.wav`."""
    return dst.with_name(f"{dst.stem}_audio.wav")


def _fit(stream: Stream, fmt: AudioFormat, samples: int) -> Stream:
    """Resample onto the file's timeline, then pad/cut to exactly `samples`."""
    layout = "mono" if fmt.channels == 1 else "stereo"
    return (
        stream.filter("aresample", fmt.sample_rate, first_pts=0)
        .filter("aformat", sample_rates=fmt.sample_rate, channel_layouts=layout)
        .filter("apad", whole_len=samples)
        .filter("atrim", end_sample=samples)
        .filter("asetpts", "PTS-STARTPTS")
    )


def _quiet(stream: Stream) -> Stream:
    return stream.global_args("-nostdin", "-hide_banner", "-v", "error")


def _placed(sound: SegmentSound, fmt: AudioFormat, samples: int) -> Stream:
    """`sound` on its picture's timeline at the delivery rate: shifted, then padded/cut to `samples`."""
    a = ffmpeg.input(str(sound.source))["a:0"].filter("aresample", fmt.sample_rate, first_pts=0)
    if sound.delay_samples:
        a = a.filter("adelay", delays=f"{sound.delay_samples}S", all=1)
    if sound.trim_samples:
        a = a.filter("atrim", start_sample=sound.trim_samples).filter("asetpts", "PTS-STARTPTS")
    return _fit(a, fmt, samples)


def _planned_sound(plan: MuxPlan, provider_video: Path, master_audio: Path | None) -> SegmentSound:
    """The sound the plan chose (the master, or the provider's own), with the plan's shift."""
    source = master_audio if plan.audio_source == "master" and master_audio is not None else provider_video
    return SegmentSound(source, plan.delay_samples, plan.trim_samples)


def _write_fitted_audio(plan: MuxPlan, provider_video: Path, master_audio: Path | None, dst_wav: Path) -> FfmpegRun:
    """The planned audio as WAV, padded/cut to the video."""
    fmt = plan.audio
    assert fmt is not None  # mux writes audio only when the plan has some
    sound = _planned_sound(plan, provider_video, master_audio)
    a = _placed(sound, fmt, plan.total_samples)
    with atomic_output(dst_wav) as tmp:
        out = a.output(str(tmp), acodec=fmt.wav_codec, ac=fmt.channels, ar=fmt.sample_rate, map_metadata=-1)
        return run_ffmpeg(compile_stream(_quiet(out)), what=f"fitting {sound.source.name}'s audio into {dst_wav.name}")


def _mp4_with_audio(
    video: Stream,
    wav: Path,
    fmt: AudioFormat,
    dst: Path,
    *,
    what: str,
    copyts: bool = False,
    index_bytes: int | None = None,
    **video_opts: Any,
) -> FfmpegRun:
    """`video` and the WAV's sound (encoded to AAC) into `dst`, its index at the front. `copyts`: keep the
    inputs' timestamps as they are instead of starting each input at 0. `index_bytes`: room kept for the index
    (`index_reserve`); without it the index is moved to the front after writing (a second pass over the file)."""
    front = {"moov_size": index_bytes} if index_bytes else {"movflags": "+faststart"}
    audio = ffmpeg.input(str(wav)).audio
    with atomic_output(dst) as tmp:
        out = ffmpeg.output(
            video,
            audio,
            str(tmp),
            acodec="aac",
            # the fast coder: ~0.7x the CPU of the default two-loop search and no less faithful (measured at a
            # constant 192 kbit/s on a 120 s voice: 45 dB waveform SNR against 36 dB); see AAC_QUALITY
            aac_coder="fast",
            **{"q:a": fmt.aac_quality},
            ar=fmt.sample_rate,
            ac=fmt.channels,
            map_metadata=-1,
            **front,
            **video_opts,
        )
        out = out.global_args("-copyts") if copyts else out
        return run_ffmpeg(compile_stream(_quiet(out)), what=what)


def _planned(provider_video: Path, master_audio: Path | None) -> tuple[MuxPlan, OffsetMeasurement | None]:
    """The mux plan of a provider result and its master (the offset measured when both have sound)."""
    provider = _probe_result(provider_video)
    master = probe(master_audio) if master_audio is not None else None
    measurement = None
    if master is not None and provider.audio is not None:
        measurement = measure_offset(master.path, provider_video)
    video_s = video_timing(provider_video).seconds if provider.video else None  # None: plan says what's wrong
    return plan_mux(provider, master, measurement, video_s=video_s), measurement


def _reliable_seconds(measurement: OffsetMeasurement | None) -> float | None:
    return measurement.seconds if measurement and measurement.reliable else None


def mux(provider_video: str | Path, master_audio: str | Path | None, dst: str | Path) -> MuxResult:
    """Write `dst` (mp4): the provider's video stream copied, with our master audio aligned to it (or, for TTS,
    the provider's own audio). With a master, also writes the aligned WAV beside it."""
    provider_video, dst = Path(provider_video), Path(dst)
    plan, measurement = _planned(provider_video, Path(master_audio) if master_audio is not None else None)
    for reason in plan.reasons:
        log.info("%s: %s", dst.name, reason)
    video = ffmpeg.input(str(provider_video))
    measured = _reliable_seconds(measurement)
    if plan.audio is None:
        streams = [video[PICTURE]] + ([video["a:0"]] if plan.audio_source == "provider" else [])
        with atomic_output(dst) as tmp:
            out = ffmpeg.output(*streams, str(tmp), c="copy", movflags="+faststart", map_metadata=-1)
            runs = [run_ffmpeg(compile_stream(_quiet(out)), what=f"remuxing {provider_video.name}")]
        return MuxResult(dst, measured, plan.audio_source, None, plan, runs, measurement)
    wav = audio_file_for(dst)
    runs = [_write_fitted_audio(plan, provider_video, Path(master_audio) if master_audio is not None else None, wav)]
    runs.append(_mp4_with_audio(video[PICTURE], wav, plan.audio, dst, what=f"muxing {dst.name}", vcodec="copy"))
    return MuxResult(dst, measured, plan.audio_source, wav, plan, runs, measurement)


def align(provider_video: str | Path, master_audio: str | Path) -> tuple[MuxResult, SegmentSound] | None:
    """For a segment `stitch` joins: the offset measured and the plan placing the master on `provider_video`'s
    timeline (the segment's result), and the sound it chose. Nothing is written: the sound is placed and
    encoded once, in the final. None when the plan keeps the provider's audio stream as it is: such a segment
    is `mux`ed."""
    provider_video, master_audio = Path(provider_video), Path(master_audio)
    plan, measurement = _planned(provider_video, master_audio)
    if plan.audio is None:
        return None
    for reason in plan.reasons:
        log.info("%s: %s", provider_video.name, reason)
    result = MuxResult(provider_video, _reliable_seconds(measurement), plan.audio_source, None, plan, [], measurement)
    return result, _planned_sound(plan, provider_video, master_audio)


def join_results(
    videos: Sequence[Path], masters: Sequence[Path | None], work: Path, final_name: str
) -> tuple[list[MuxResult], MuxResult]:
    """A job's final file in `work` from its provider results (in order) and their master audio: one result
    muxed, several placed on their masters and stitched in one pass (or, where the voice is the provider's own,
    each muxed and stitched with its sound). The per-segment results, and the final."""
    if len(videos) == 1:
        only = mux(videos[0], masters[0], work / final_name)
        return [only], only
    pairs = list(zip(videos, masters, strict=True))
    aligned = [align(v, m) if m is not None else None for v, m in pairs]
    placed = [a for a in aligned if a is not None]
    if len(placed) == len(pairs):
        sounds = [sound for _, sound in placed]
        return [result for result, _ in placed], stitch(videos, work / final_name, segment_audio=sounds)
    muxed = [mux(v, m, work / f"segment-{i}.mp4") for i, (v, m) in enumerate(pairs)]
    return muxed, stitch([m.path for m in muxed], work / final_name)


def _concat_listing(files: list[Path], seconds: tuple[float, ...], scratch: Path) -> Path:
    """An ffconcat listing of the segments, each lasting its measured video duration."""

    def quoted(p: Path) -> str:
        return "'" + str(p.resolve()).replace("'", "'\\''") + "'"

    listing = scratch / "segments.ffconcat"
    entries = "".join(f"file {quoted(f)}\nduration {s:.6f}\n" for f, s in zip(files, seconds, strict=True))
    listing.write_text("ffconcat version 1.0\n" + entries, encoding="utf-8")
    return listing


def _join_audio(sounds: list[SegmentSound], plan: StitchPlan, dst_wav: Path) -> FfmpegRun:
    fmt = plan.audio
    silence = f"anullsrc=r={fmt.sample_rate}:cl={'mono' if fmt.channels == 1 else 'stereo'}"
    placed = [
        _fit(ffmpeg.input(silence, f="lavfi"), fmt, n) if i in plan.silent else _placed(sound, fmt, n)
        for i, (sound, n) in enumerate(zip(sounds, plan.segment_samples, strict=True))
    ]
    joined = ffmpeg.concat(*placed, v=0, a=1)
    with atomic_output(dst_wav) as tmp:
        out = joined.output(str(tmp), acodec=fmt.wav_codec, ac=fmt.channels, ar=fmt.sample_rate, map_metadata=-1)
        return run_ffmpeg(compile_stream(_quiet(out)), what=f"joining {len(sounds)} segments' audio")


def _reencoded_video(files: list[Path], first: VideoStream) -> Stream:
    """Every segment fitted (letterboxed, square pixels) into the first one's displayed frame, at its rate."""
    width, height = first.display_width - first.display_width % 2, first.display_height - first.display_height % 2
    parts = [
        ffmpeg.input(str(f))[PICTURE]
        .filter("scale", width, height, force_original_aspect_ratio="decrease", force_divisible_by=2)
        .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2")
        .filter("setsar", 1)
        .filter("fps", first.fps or DEFAULT_FPS)
        for f in files
    ]
    return ffmpeg.concat(*parts, v=1, a=0)


def stitch(
    segment_files: Sequence[str | Path], dst: str | Path, *, segment_audio: Sequence[SegmentSound] | None = None
) -> MuxResult:
    """Join segment mp4s in order into `dst`, with the joined audio delivered beside it as WAV.

    `segment_audio`: each segment's sound (its master and where it goes, as `align` planned it); without it the
    segments' own audio streams are used. Each is padded/cut to its segment's picture. Video is stream-copied
    when the segments share codec parameters, else re-encoded once.
    """
    files = [Path(f) for f in segment_files]
    dst = Path(dst)
    sounds = list(segment_audio) if segment_audio is not None else [SegmentSound(f) for f in files]
    if len(sounds) != len(files):
        raise ValueError("segment_audio must have one entry per segment")
    probes = [_probe_result(f) for f in files]
    plan = plan_stitch(probes, [probe(s.source) for s in sounds], [video_timing(f) for f in files])
    for reason in plan.reasons:
        log.info("%s: %s", dst.name, reason)
    dst.parent.mkdir(parents=True, exist_ok=True)
    wav = audio_file_for(dst)
    runs = [_join_audio(sounds, plan, wav)]
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".stitch-") as scratch:  # hidden if left by a kill
        opts: dict[str, Any]
        if plan.video_mode == "copy":
            # The concat demuxer's timestamps already place each segment at its start (less the file's own
            # start time). They are kept as they are (-copyts): re-based, the picture shifts against the sound,
            # because ffmpeg takes the demuxer's first dts (before a B-frame delay) as its start.
            listing = _concat_listing(files, plan.segment_seconds, Path(scratch))
            video = ffmpeg.input(str(listing), f="concat", safe=0)[PICTURE]
            opts = {"vcodec": "copy", "copyts": True}
        else:
            first = probes[0].video
            assert first is not None  # video_timing read its packets
            video, opts = (
                _reencoded_video(files, first),
                {"vcodec": "libx264", "crf": 16, "threads:v": X264_THREADS, "preset": "medium", "pix_fmt": "yuv420p"},
            )
        runs.append(
            _mp4_with_audio(
                video, wav, plan.audio, dst, what=f"stitching {dst.name}", index_bytes=plan.index_bytes, **opts
            )
        )
    return MuxResult(dst, None, "master" if segment_audio is not None else "provider", wav, plan, runs)
