"""Test media built at test time with the bundled ffmpeg, plus independent ways to measure the result.

Builders (everyone may import these):
    make_video(path, seconds=.., width=.., height=.., fps=.., ...)   container and default codecs by suffix
    make_audio(path, seconds=.., rate=.., channels=.., speech=True, level_db=..)
    make_image(path, width, height)                                   one still frame (png/jpg)
    truncate_copy(src, dst, keep=0.5)                                 a file cut short, as a failed copy leaves it
Measurements (independent of pipeline.stages.probe):
    media_info(path)     -> pymediainfo tracks by kind ("General", "Video", "Audio", "Image")
    decode_stats(path)   -> DecodeStats(video_frames, video_seconds, audio_seconds) from a real ffmpeg decode
    mean_volume_db(path) -> ffmpeg volumedetect's mean volume of the first audio stream
    gray_frames(path)    -> every decoded frame as a (frames, height, width) uint8 array (players' autorotate on)
    mp4_atoms(path)      -> the top-level box types of an mp4/mov, in file order ("moov" before "mdat" = faststart)
    mp4_boxes(path)      -> the same with each box's size
    assert_provider_ready(path, limits) asserts a conformed mp4 passes every limit, read from MediaInfo
Hostile corpus: make_interlaced_mpeg2_ts, make_prores_tmcd_mov, make_dnxhr_mxf, make_odd_size_phone, ... (below).

Everything is small and fast by default (320x240, 2 s, fast presets); pass bigger values when a test is about size.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ffmpeg
import numpy as np
import pytest
from pymediainfo import MediaInfo

from pipeline.ffmpeg import compile_stream, ffmpeg_exe, run_ffmpeg
from pipeline.fsutil import atomic_output
from pipeline.limits import Limits, load_limits
from pipeline.speech import synth_speech, write_wav

# suffix -> (default video encoder, default audio encoder)
_VIDEO_DEFAULTS = {
    ".mp4": ("libx264", "aac"),
    ".m4v": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "aac"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".ts": ("libx264", "aac"),
    ".m2ts": ("libx264", "aac"),
    ".mts": ("libx264", "aac"),
    ".avi": ("libx264", "libmp3lame"),
    ".flv": ("libx264", "aac"),
}
_AUDIO_CODECS = {
    ".wav": "pcm_s16le",
    ".mp3": "libmp3lame",
    ".m4a": "aac",
    ".aac": "aac",
    ".flac": "flac",
    ".ogg": "libvorbis",
    ".opus": "libopus",
    ".mka": "aac",
}
_WAV_CODECS = {16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}
# fast settings so tests stay cheap; a caller's **extra wins
_ENCODER_SPEED = {
    "libx264": {"preset": "veryfast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=error"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": 8},
    "libvpx": {"deadline": "realtime", "cpu-used": 8},
}
_HDR_TRANSFER = {"pq": "smpte2084", "hlg": "arib-std-b67"}


def _run(stream, what: str) -> None:
    run_ffmpeg(compile_stream(stream.global_args("-hide_banner", "-loglevel", "error")), what=what)


def _video_source(seconds, width, height, fps, *, grain: int, vfr: bool, interlaced: bool, sar, hdr, pix_fmt):
    v = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}", f="lavfi", t=seconds)
    if grain:
        v = v.filter("noise", alls=grain, allf="t+u")
    if vfr:
        # every frame for 10 frames, then every other frame: a stts table with two frame durations
        v = v.filter("select", "lt(mod(n,20),10)+not(mod(n,2))")
    if interlaced:
        v = v.filter("setfield", "tff")
    if sar:
        v = v.filter("setsar", sar=sar.replace(":", "/"))
    if hdr:
        v = v.filter("setparams", color_primaries="bt2020", color_trc=_HDR_TRANSFER[hdr], colorspace="bt2020nc")
    return v.filter("format", pix_fmt)


def _audio_source(seconds, *, audio_file, rate, channels):
    if audio_file is not None:
        a = ffmpeg.input(str(audio_file)).audio.filter("apad")
    else:
        a = ffmpeg.input(f"sine=frequency=440:sample_rate={rate}", f="lavfi").audio
    return a.filter("atrim", duration=seconds), {"ac": channels, "ar": rate}


def _interlace_options(vcodec: str) -> dict:
    if vcodec == "libx264":
        return {"flags": "+ildct+ilme", "x264-params": "tff=1"}
    return {"flags": "+ildct+ilme", "top": 1} if vcodec == "prores_ks" else {"flags": "+ildct+ilme"}


def make_video(
    path: str | Path,
    *,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 240,
    fps: float = 25,
    vcodec: str | None = None,
    pix_fmt: str = "yuv420p",
    audio: bool = True,
    acodec: str | None = None,
    audio_rate: int = 48000,
    audio_channels: int = 2,
    audio_file: str | Path | None = None,
    rotate: Literal[90, 180, 270] | None = None,
    interlaced: bool = False,
    vfr: bool = False,
    hdr: Literal["pq", "hlg"] | None = None,
    sar: str | None = None,
    grain: int = 0,
    cover_art: bool = False,
    faststart: bool = False,
    **extra,
) -> Path:
    """A test video (testsrc2 picture, 440 Hz tone or `audio_file` as sound). Container and default codecs by suffix.

    rotate: clockwise display rotation stored as a tag (the pixels stay as coded), as phones write it.
    interlaced: field-coded TFF (MBAFF for H.264). vfr: two alternating frame durations.
    hdr: BT.2020 with PQ or HLG transfer (use pix_fmt="yuv420p10le" and a 10-bit encoder).
    sar: sample aspect ratio such as "8:9" (anamorphic). grain: noise strength 0..100 (hard to compress).
    cover_art: add a JPEG attached picture (mp4/mov/m4v). extra: more output options, e.g. b="25M", r=30.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    default_v, default_a = _VIDEO_DEFAULTS.get(suffix, ("libx264", "aac"))
    vcodec = vcodec or default_v
    v = _video_source(
        seconds, width, height, fps, grain=grain, vfr=vfr, interlaced=interlaced, sar=sar, hdr=hdr, pix_fmt=pix_fmt
    )
    streams = [v]
    # per-stream codec keys: ffmpeg-python sorts options, so a bare -vcodec would also hit the cover art
    opts: dict = {"c:v:0": vcodec, **_ENCODER_SPEED.get(vcodec, {})}
    if vcodec == "libx265" and suffix in (".mp4", ".mov", ".m4v"):
        opts["tag:v:0"] = "hvc1"  # the tag Apple players want
    if interlaced:
        opts.update(_interlace_options(vcodec))
    if vfr:
        opts["fps_mode"] = "passthrough"
    if audio:
        a, audio_opts = _audio_source(seconds, audio_file=audio_file, rate=audio_rate, channels=audio_channels)
        streams.append(a)
        opts.update(audio_opts, **{"c:a": acodec or default_a})
    if faststart:
        opts["movflags"] = "+faststart"
    opts.update(extra)
    with tempfile.TemporaryDirectory() as scratch, atomic_output(path) as tmp:
        if cover_art:
            streams.append(ffmpeg.input(str(make_image(Path(scratch) / "cover.jpg", width=64, height=64))))
            opts.update({"c:v:1": "mjpeg", "disposition:v:1": "attached_pic"})
        if rotate is None:
            _run(ffmpeg.output(*streams, str(tmp), t=seconds, **opts), f"making {path.name}")
        else:
            plain = Path(scratch) / f"unrotated{suffix}"
            _run(ffmpeg.output(*streams, str(plain), t=seconds, **opts), f"making {path.name}")
            # ffmpeg's display_rotation is counter-clockwise; phones (and MediaInfo) speak clockwise
            tagged = ffmpeg.input(str(plain), display_rotation=-rotate)
            _run(ffmpeg.output(tagged, str(tmp), c="copy", map=0), f"tagging rotation on {path.name}")
    return path


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.sin(2 * np.pi * 440.0 * t).astype(np.float32)


def make_audio(
    path: str | Path,
    *,
    seconds: float = 2.0,
    rate: int = 48000,
    channels: int = 1,
    speech: bool = True,
    level_db: float = -20.0,
    codec: str | None = None,
    bit_depth: int | None = None,
    cover_art: bool = False,
    seed: int = 0,
    **extra,
) -> Path:
    """An audio file: speech-like dialogue (pipeline.speech) or a 440 Hz tone at an RMS of `level_db` dBFS.

    Codec by suffix (.wav PCM with `bit_depth` 16/24/32, .mp3, .m4a, .flac, .ogg, .opus). channels > 1 are an
    ffmpeg upmix (mono to 5.1 lands in the centre channel, as dialogue does). cover_art adds a JPEG attached
    picture (mp3/m4a). extra: more output options.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    signal = synth_speech(seconds, sample_rate=rate, seed=seed) if speech else _tone(seconds, rate)
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) or 1.0
    signal = signal * (10 ** (level_db / 20) / rms)
    if codec is None:
        codec = _WAV_CODECS[bit_depth or 16] if suffix == ".wav" else _AUDIO_CODECS.get(suffix, "aac")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source.wav"
        write_wav(source, signal, rate)
        streams = [ffmpeg.input(str(source)).audio]
        opts: dict = {"c:a": codec, "ac": channels, "ar": rate}
        if cover_art:
            streams.append(ffmpeg.input(str(make_image(Path(scratch) / "cover.jpg", width=64, height=64))))
            opts.update({"c:v": "mjpeg", "disposition:v": "attached_pic"})
            if suffix == ".mp3":
                opts["id3v2_version"] = 3
        opts.update(extra)
        with atomic_output(path) as tmp:
            _run(ffmpeg.output(*streams, str(tmp), **opts), f"making {path.name}")
    return path


def make_image(path: str | Path, *, width: int = 320, height: int = 240) -> Path:
    """One still picture (format by suffix: .png, .jpg)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        src = ffmpeg.input(f"testsrc2=size={width}x{height}:rate=1", f="lavfi", t=1)
        _run(ffmpeg.output(src, str(tmp), frames=1, update=1), f"making {path.name}")
    return path


def truncate_copy(src: str | Path, dst: str | Path, *, keep: float = 0.5) -> Path:
    """The first `keep` fraction of `src`'s bytes, as an interrupted download or copy leaves a file."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


# ---- independent measurements -------------------------------------------------------------------


def media_info(path: str | Path) -> dict[str, list]:
    """pymediainfo tracks grouped by kind: {"General": [...], "Video": [...], "Audio": [...], "Image": [...]}."""
    tracks: dict[str, list] = {}
    for track in MediaInfo.parse(str(path)).tracks:
        tracks.setdefault(track.track_type, []).append(track)
    return tracks


@dataclass(frozen=True)
class DecodeStats:
    video_frames: int
    video_seconds: float
    audio_seconds: float


_FRAME_RE = re.compile(r"^frame=(\d+)", re.M)
_TIME_RE = re.compile(r"^out_time_us=(\d+)", re.M)


def _decode(path: Path, stream: str) -> tuple[int, float]:
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-v",
        "error",
        "-i",
        str(path),
        "-map",
        stream,
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    frames = [int(x) for x in _FRAME_RE.findall(out.stdout)]
    times = [int(x) for x in _TIME_RE.findall(out.stdout)]
    return (frames[-1] if frames else 0), (times[-1] / 1e6 if times else 0.0)


def decode_stats(path: str | Path) -> DecodeStats:
    """Decode the first video and the first audio stream fully; what a player would actually get."""
    path = Path(path)
    frames, vsec = _decode(path, "0:v:0?")
    _, asec = _decode(path, "0:a:0?")
    return DecodeStats(video_frames=frames, video_seconds=vsec, audio_seconds=asec)


_MEAN_RE = re.compile(r"mean_volume:\s*(-?[\d.]+|-inf) dB")


def mean_volume_db(path: str | Path) -> float:
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostats",
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-af",
        "volumedetect",
        "-f",
        "null",
        "-",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    m = _MEAN_RE.search(out.stderr)
    if not m:
        raise AssertionError(f"no audio volume measured in {path}")
    return float(m.group(1))


def gray_frames(path: str | Path, *, start: float = 0.0) -> np.ndarray:
    """Decode the first video stream (as a player would, rotation applied) into gray frames."""
    probe = media_info(path)["Video"][0]
    width, height = int(probe.width), int(probe.height)
    if round(float(probe.rotation or 0)) % 180 == 90:
        width, height = height, width
    argv = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-ss",
        str(start),
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gray",
        "-",
    ]
    raw = subprocess.run(argv, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width)


def mp4_boxes(path: str | Path) -> list[tuple[str, int]]:
    """Top-level boxes of an ISO-BMFF file, in order: (type, size in bytes)."""
    out = []
    with Path(path).open("rb") as f:
        while len(head := f.read(16)) >= 8:
            size, kind = struct.unpack(">I4s", head[:8])
            if size == 1:
                size = struct.unpack(">Q", head[8:16])[0]
            out.append((kind.decode("latin-1"), size))
            if size < 8:
                break
            f.seek(size - len(head), 1)
    return out


def mp4_atoms(path: str | Path) -> list[str]:
    """Top-level box types of an ISO-BMFF file, in order."""
    return [kind for kind, _ in mp4_boxes(path)]


def assert_provider_ready(path: Path, limits: Limits | None = None) -> None:
    """What every conformed file must be, read straight from MediaInfo (default: the strictest limits)."""
    limits = limits or load_limits()
    tracks = media_info(path)
    general, video = tracks["General"][0], tracks["Video"][0]
    assert general.format == "MPEG-4" and len(tracks["Video"]) == 1 and not tracks.get("Text")
    assert float(general.duration) / 1000 <= limits.video_max_seconds
    assert (video.format, video.format_profile.split("@")[0]) == ("AVC", "High")
    assert (video.bit_depth, video.chroma_subsampling, video.frame_rate_mode) == (8, "4:2:0", "CFR")
    assert video.scan_type in ("Progressive", None)
    assert float(video.rotation or 0) == 0
    assert float(video.pixel_aspect_ratio) == pytest.approx(1.0)
    assert video.width % 2 == 0 and video.height % 2 == 0
    assert max(video.width, video.height) <= limits.video_max_side
    assert path.stat().st_size <= limits.video_max_bytes
    assert mp4_atoms(path).index("moov") < mp4_atoms(path).index("mdat")  # +faststart
    for audio in tracks.get("Audio", []):
        assert audio.format == "AAC" and audio.channel_s <= 2


# ---- hostile real-world corpus -------------------------------------------------------------------
# What users really bring: broadcast, post-production and phone files, damaged and oddly named ones.
# Each builder writes one tiny file (well under a second of encoding) and returns its path.


def _ffmpeg(argv: list[str], what: str) -> None:
    run_ffmpeg([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *argv], what=what)


def _lavfi_video(seconds: float, width: int = 160, height: int = 120, fps: float = 25) -> list[str]:
    return ["-f", "lavfi", "-t", f"{seconds}", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]


def _lavfi_tone(seconds: float, rate: int = 48000, layout: str = "stereo") -> list[str]:
    return [
        "-f",
        "lavfi",
        "-t",
        f"{seconds}",
        "-i",
        f"sine=frequency=440:sample_rate={rate},aformat=channel_layouts={layout}",
    ]


def make_dnxhr_mxf(path: Path, seconds: float = 1.0) -> Path:
    """DNxHR LB with 24-bit PCM in MXF OP1a, as an Avid/Resolve export."""
    _ffmpeg(
        [
            *_lavfi_video(seconds, 256, 144),
            *_lavfi_tone(seconds, layout="mono"),
            "-c:v",
            "dnxhd",
            "-profile:v",
            "dnxhr_lb",
            "-pix_fmt",
            "yuv422p",
            "-c:a",
            "pcm_s24le",
            "-f",
            "mxf",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_prores_tmcd_mov(path: Path, seconds: float = 1.0) -> Path:
    """ProRes 422 HQ, 24-bit PCM and a timecode (tmcd) track in a QuickTime file."""
    _ffmpeg(
        [
            *_lavfi_video(seconds),
            *_lavfi_tone(seconds),
            "-c:v",
            "prores_ks",
            "-profile:v",
            "3",
            "-pix_fmt",
            "yuv422p10le",
            "-c:a",
            "pcm_s24le",
            "-timecode",
            "01:00:00:00",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_interlaced_mpeg2_ts(path: Path, seconds: float = 1.0) -> Path:
    """Broadcast: interlaced MPEG-2 720x576 TFF with AC-3 5.1 in an MPEG transport stream."""
    _ffmpeg(
        [
            *_lavfi_video(seconds, 720, 576),
            *_lavfi_tone(seconds, layout="5.1"),
            "-vf",
            "setfield=tff",
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ildct+ilme",
            "-aspect",
            "16:9",
            "-b:v",
            "2M",
            "-c:a",
            "ac3",
            "-f",
            "mpegts",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_odd_size_phone(path: Path, seconds: float = 1.0, *, rotate: int = 90) -> Path:
    """A screen recording / phone clip: odd dimensions (239x135, so H.264 4:4:4), variable frame rate, rotation tag."""
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / f"plain{path.suffix}"
        _ffmpeg(
            [
                *_lavfi_video(seconds, 239, 135, 30),
                *_lavfi_tone(seconds),
                "-vf",
                "select='lt(mod(n,20),10)+not(mod(n,2))'",
                "-fps_mode",
                "passthrough",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv444p",
                "-c:a",
                "aac",
                str(plain),
            ],
            f"making {path.name}",
        )
        _ffmpeg(
            ["-display_rotation", f"{-rotate}", "-i", str(plain), "-c", "copy", "-map", "0", str(path)],
            f"tagging {path.name}",
        )
    return path


def make_two_video_two_audio(path: Path, seconds: float = 1.0) -> Path:
    """A thumbnail (one-frame MJPEG, not flagged as cover art) before the real video, and two audio tracks."""
    _ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "color=red:size=64x64:duration=0.04",
            *_lavfi_video(seconds),
            *_lavfi_tone(seconds),
            "-f",
            "lavfi",
            "-t",
            f"{seconds}",
            "-i",
            "anoisesrc=amplitude=0.1",
            "-map",
            "0:v",
            "-map",
            "1:v",
            "-map",
            "2:a",
            "-map",
            "3:a",
            "-c:v:0",
            "mjpeg",
            "-c:v:1",
            "libx264",
            "-preset",
            "veryfast",
            "-c:a",
            "aac",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_mkv_with_subtitles_and_font(path: Path, seconds: float = 1.0) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        subs = Path(scratch) / "subs.srt"
        subs.write_text("1\n00:00:00,000 --> 00:00:00,900\nHello\n", encoding="utf-8")
        font = Path(scratch) / "font.ttf"
        font.write_bytes(b"\x00\x01\x00\x00" + bytes(256))
        _ffmpeg(
            [
                *_lavfi_video(seconds),
                *_lavfi_tone(seconds),
                "-i",
                str(subs),
                "-map",
                "0",
                "-map",
                "1",
                "-map",
                "2",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-c:a",
                "libopus",
                "-c:s",
                "srt",
                "-attach",
                str(font),
                "-metadata:s:t",
                "mimetype=application/x-truetype-font",
                str(path),
            ],
            f"making {path.name}",
        )
    return path


def make_animated_gif(path: Path, seconds: float = 1.0) -> Path:
    _ffmpeg([*_lavfi_video(seconds, 96, 64, 10), "-c:v", "gif", "-f", "gif", str(path)], f"making {path.name}")
    return path


def make_mjpeg_avi(path: Path, seconds: float = 1.0) -> Path:
    """A webcam/camera file: full-range yuvj420p MJPEG with 16-bit PCM in AVI."""
    _ffmpeg(
        [
            *_lavfi_video(seconds, 176, 144, 15),
            *_lavfi_tone(seconds, rate=22050, layout="mono"),
            "-c:v",
            "mjpeg",
            "-pix_fmt",
            "yuvj420p",
            "-c:a",
            "pcm_s16le",
            "-f",
            "avi",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_fragmented_mp4(path: Path, seconds: float = 1.0) -> Path:
    _ffmpeg(
        [
            *_lavfi_video(seconds),
            *_lavfi_tone(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-c:a",
            "aac",
            "-movflags",
            "empty_moov+frag_keyframe+default_base_moof",
            "-g",
            "10",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_offset_streams(path: Path, seconds: float = 1.0, *, video_delay: float = 0.3) -> Path:
    """An mp4 whose audio starts `video_delay` seconds before the video (an edit list on the video track)."""
    _ffmpeg(
        [
            "-itsoffset",
            f"{video_delay}",
            *_lavfi_video(seconds),
            *_lavfi_tone(seconds + video_delay),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-c:a",
            "aac",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def make_copy_trimmed(path: Path, seconds: float = 1.0, *, at: float = 1.5) -> Path:
    """A cut made without re-encoding (ffmpeg -c copy, phone gallery trims): the video keeps the frames from the
    previous keyframe and an edit list starts the presentation `at` seconds into them."""
    with tempfile.TemporaryDirectory() as scratch:
        whole = Path(scratch) / f"whole{path.suffix}"
        _ffmpeg(
            [
                *_lavfi_video(at + seconds + 0.5),
                *_lavfi_tone(at + seconds + 0.5),
                "-c:v",
                "libx264",
                "-g",
                "250",
                "-preset",
                "veryfast",
                "-c:a",
                "aac",
                str(whole),
            ],
            f"making {path.name}",
        )
        _ffmpeg(["-ss", f"{at}", "-t", f"{seconds}", "-i", str(whole), "-c", "copy", str(path)], f"cutting {path.name}")
    return path


def flip_bits(src: Path, dst: Path, *, count: int = 40, seed: int = 1) -> Path:
    """A copy with `count` bytes scrambled in the middle half of the file (headers intact): a bad sector."""
    data = bytearray(Path(src).read_bytes())
    rng = np.random.default_rng(seed)
    for pos in rng.integers(len(data) // 4, 3 * len(data) // 4, size=count):
        data[pos] ^= 0xFF
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


# ---- several audio tracks, lying lengths, HDR10 metadata ------------------------------------------------------


def make_music(path: Path, seconds: float = 3.0, *, rate: int = 48000, level_db: float = -20.0) -> Path:
    """A music bed: a chord that never stops (no pauses, unlike speech), mono WAV at `level_db` dBFS RMS."""
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0))
    chord *= 1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)
    chord *= 10 ** (level_db / 20) / float(np.sqrt(np.mean(chord**2)))
    write_wav(path, chord.astype(np.float32), rate)
    return path


@dataclass(frozen=True)
class Track:
    """One audio track of make_multitrack: its sound (a mono WAV) and its container tags."""

    sound: Path
    language: str | None = None
    title: str | None = None
    default: bool = False


def make_multitrack(path: Path, tracks: list[Track], *, seconds: float = 3.0) -> Path:
    """A picture plus one AAC track per `tracks`, in order, with their language, title and default flag.

    Only the tracks marked default are flagged (Matroska's muxer would otherwise flag the first by itself)."""
    argv = [*_lavfi_video(seconds)]
    for track in tracks:
        argv += ["-i", str(track.sound)]
    argv += [
        "-map",
        "0:v",
        *[x for i in range(len(tracks)) for x in ("-map", f"{i + 1}:a")],
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-c:a",
        "aac",
        "-ar",
        "48000",
        "-t",
        f"{seconds}",
    ]
    for i, track in enumerate(tracks):
        argv += [f"-disposition:a:{i}", "default" if track.default else "0"]
        argv += [f"-metadata:s:a:{i}", f"language={track.language or 'und'}"]
        argv += [f"-metadata:s:a:{i}", f"title={track.title}"] if track.title else []
    if path.suffix.lower() == ".mkv":
        argv += ["-default_mode", "passthrough"]
    _ffmpeg([*argv, str(path)], f"making {path.name}")
    return path


def concatenated_mp3(path: Path, first: Path, second: Path) -> Path:
    """Two MP3 files joined byte for byte, as podcast and TTS tools do: the first one's Xing header (the frame
    count a player trusts) covers only the first part."""
    path.write_bytes(first.read_bytes() + second.read_bytes())
    return path


# SMPTE ST 2086 (a P3 D65 display, 0.0001-1000 nits) and MaxCLL/MaxFALL, as an HDR10 grade carries them
HDR10_X265 = (
    "hdr10=1:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
    "max-cll=1000,400:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc"
)


def make_hdr10(path: Path, seconds: float = 1.0) -> Path:
    """HEVC Main 10, PQ/BT.2020, with mastering-display and content-light-level SEI (and mp4 mdcv/clli)."""
    _ffmpeg(
        [
            *_lavfi_video(seconds, 320, 240),
            "-vf",
            "setparams=color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc,format=yuv420p10le",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            f"log-level=error:{HDR10_X265}",
            "-tag:v",
            "hvc1",
            str(path),
        ],
        f"making {path.name}",
    )
    return path


def hevc_h264_sei(path: Path) -> str:
    """What ffmpeg's trace_headers finds in the first video stream's headers and SEI (mastering display
    colour volume, content light level...), read from the bitstream itself."""
    argv = [
        ffmpeg_exe(),
        "-hide_banner",
        "-v",
        "trace",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-c",
        "copy",
        "-bsf:v",
        "trace_headers",
        "-frames:v",
        "3",
        "-f",
        "null",
        "-",
    ]
    return subprocess.run(argv, capture_output=True, text=True, errors="replace").stderr


def stream_side_data(path: Path) -> str:
    """The 'Side data:' block ffmpeg prints for the first video stream (container-level mdcv/clli)."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace"
    ).stderr
    video = out[out.find("Video:") :]
    return video[: video.find("Stream #", 1)] if "Stream #" in video[1:] else video
