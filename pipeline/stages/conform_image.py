"""Stage: a still image made ready for the talking-portrait model (plan, then execute).

probe_image(path) -> ImageProbe          Pillow reads the header: format, stored size, EXIF orientation, mode
                                         (colour model), alpha, bit depth, frames, embedded colour profile.
plan_image(probe, limits, opts) -> ImagePlan   pure: the refusals (animated, too small, not an accepted format,
                                         unsupported pixels) and every step with its reason.
execute_image(plan, dst) -> ImageResult  decodes, applies the steps in order (orientation, 16 -> 8 bit, colour
                                         to sRGB, alpha flattened, downscaled), writes atomically.
conform_image(src, dst, limits, opts)    the three in order.
last_frame_image(video, dst)             a clip's last frame as a PNG: where the next clip of a chain starts.

The output is always re-encoded, 8-bit RGB: the EXIF block (GPS position, camera serial) of a user's photo is
not sent to a provider, and every quirk of the source (orientation tag, CMYK, profile, alpha) ends here.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import ffmpeg
import numpy as np
from PIL import Image, ImageCms, ImageColor, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import InputError, ValidationError
from ..ffmpeg import compile_stream, media_path, run_ffmpeg
from ..fsutil import atomic_output
from ..limits import ImageLimits

log = logging.getLogger("lipsync.conform_image")

ORIENTATION_TAG = 0x0112
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the picture a quarter
QUALITY_STEP = 5
FORMAT_NAMES = {"MPO": "jpeg"}  # a camera's multi-picture JPEG: the first picture is the photo
# ISO-BMFF brands of HEIF stills (HEIC from phones included); read to name the format Pillow alone cannot open
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
SUFFIXES = {"jpeg": ".jpg", "png": ".png"}
OutputFormat = Literal["auto", "jpeg", "png"]


@dataclass(frozen=True)
class ImageProbe:
    """What the header says. `width`/`height` are as stored; `display_*` after the EXIF orientation."""

    path: Path
    format: str  # lower-case Pillow format name ("jpeg", "png", "webp", "gif", "heif"...)
    width: int
    height: int
    orientation: int  # EXIF orientation 1..8 (1 when absent or out of range)
    mode: str  # Pillow's mode, the colour model: RGB, RGBA, L, LA, P, CMYK, I;16...
    has_alpha: bool  # an alpha channel or a transparent palette entry / colour key
    bit_depth: int  # bits per channel as stored
    frames: int  # > 1: animated (a camera MPO's extra pictures are not counted)
    size_bytes: int
    icc_profile: str | None  # the embedded profile's description, None without one

    @property
    def display_width(self) -> int:
        return self.height if self.orientation in SWAPPING_ORIENTATIONS else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.orientation in SWAPPING_ORIENTATIONS else self.height

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "path": str(self.path),
            "display_width": self.display_width,
            "display_height": self.display_height,
        }


@dataclass(frozen=True)
class ImageOptions:
    background: str = "#ffffff"  # what transparent pixels become (any CSS colour Pillow knows)
    output_format: OutputFormat = "auto"  # auto = JPEG

    def __post_init__(self) -> None:
        try:
            rgb = ImageColor.getrgb(self.background)
        except ValueError:
            raise ValidationError(
                f"background colour {self.background!r} is not a colour (try '#ffffff' or 'black')"
            ) from None
        object.__setattr__(self, "background", "#{:02x}{:02x}{:02x}".format(*rgb[:3]))


@dataclass(frozen=True)
class ImagePlan:
    source: Path
    probe: ImageProbe
    transpose: bool  # apply the EXIF orientation to the pixels
    reduce_16_bit: bool  # 16-bit grey samples to 8 bit (Pillow already reads RGB;16 as 8 bit)
    colour: Literal["keep", "icc", "convert"]  # icc: the embedded profile to sRGB; convert: Pillow's formulas
    flatten: str | None  # the background colour alpha is flattened onto
    width: int  # output size
    height: int
    format: Literal["jpeg", "png"]
    quality: int | None  # JPEG: the first quality tried
    min_quality: int | None  # JPEG: the lowest tried to meet max_bytes
    max_bytes: int
    reasons: tuple[str, ...]

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "source": str(self.source),
            "probe": self.probe.to_dict(),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class ImageResult:
    path: Path
    plan: ImagePlan
    width: int
    height: int
    size_bytes: int
    quality: int | None  # the JPEG quality written

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "plan": self.plan.to_dict(),
            "width": self.width,
            "height": self.height,
            "size_bytes": self.size_bytes,
            "quality": self.quality,
        }


# ---- probe ------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def heif_available() -> bool:
    """pillow-heif (the optional `heic` extra, whose wheel carries libheif) registers HEIF with Pillow."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _is_heif(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _bit_depth(mode: str, rawmode: str | None) -> int:
    """Bits per channel as stored: Pillow reads 16-bit RGB(A) as 8-bit modes, so the decoder's raw mode tells."""
    if mode == "1":
        return 1
    if mode in ("I", "F"):
        return 32
    if mode.startswith("I;16") or ";16" in (rawmode or ""):
        return 16
    return 8


def _orientation(im: Image.Image) -> int:
    value = im.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _profile_name(icc: bytes | None) -> str | None:
    if not icc:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip() or "unnamed"
    except (OSError, ImageCms.PyCMSError):
        return "unreadable"


def _open(path: Path) -> ImageFile.ImageFile:
    """Open `path` with Pillow, every failure an InputError naming the file."""
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if _is_heif(path) and not heif_available():
        raise InputError(
            path, "HEIC/HEIF photo: install the heic extra (pip install 'lipsync-pipeline[heic]') or export it as JPEG"
        )
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"too many pixels to read safely ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(
            path,
            f"not an image: its bytes are no picture format, whatever its name ({path.suffix or 'no suffix'}) says",
        ) from None
    except OSError as exc:
        raise InputError(path, f"cannot read the image ({exc})") from None


def probe_image(path: str | Path) -> ImageProbe:
    """Read `path`'s header (pixels are decoded only by execute_image)."""
    path = Path(path)
    with _open(path) as im:
        fmt = FORMAT_NAMES.get(im.format or "", (im.format or "unknown").lower())
        frames = 1 if fmt == "jpeg" else getattr(im, "n_frames", 1)
        args = im.tile[0][3] if im.tile else None  # (decoder, box, offset, args): args is the raw mode
        rawmode = args if isinstance(args, str) else None
        return ImageProbe(
            path=path,
            format=fmt,
            width=im.width,
            height=im.height,
            orientation=_orientation(im),
            mode=im.mode,
            has_alpha=im.has_transparency_data,
            bit_depth=_bit_depth(im.mode, rawmode),
            frames=frames,
            size_bytes=path.stat().st_size,
            icc_profile=_profile_name(im.info.get("icc_profile")),
        )


# ---- plan (pure) ------------------------------------------------------------------------------------


def _refuse(p: ImageProbe, limits: ImageLimits) -> None:
    if p.frames > 1:
        raise InputError(
            p.path,
            f"animated {p.format.upper()} ({p.frames} frames): a talking portrait starts "
            f"from one still picture; export the frame you want as PNG or JPEG",
        )
    if p.format not in limits.image_formats:
        accepted = ", ".join(f.upper() for f in limits.image_formats)
        raise InputError(p.path, f"{p.format.upper()} images are not accepted (use {accepted})")
    if p.mode in ("I", "F"):
        raise InputError(p.path, f"32-bit pixels ({p.mode}) are not supported: export it as an 8- or 16-bit image")
    short = min(p.width, p.height)
    if short < limits.image_min_side:
        raise InputError(
            p.path,
            f"{p.display_width}x{p.display_height} px is too small to animate: the short side "
            f"must be at least {limits.image_min_side} px",
        )


def _colour(p: ImageProbe) -> tuple[Literal["keep", "icc", "convert"], str | None]:
    """How the pixels become sRGB, with the reason (None when nothing changes)."""
    profiled = p.icc_profile not in (None, "unreadable") and "srgb" not in (p.icc_profile or "").lower()
    if profiled and p.mode in ("RGB", "RGBA", "CMYK"):
        return "icc", f"{p.mode} with the profile {p.icc_profile!r}: converted to sRGB through it"
    if p.mode == "CMYK":
        return "convert", "CMYK without a usable profile: converted to RGB by Pillow's formula (colours approximate)"
    if p.mode not in ("RGB", "RGBA"):
        return "convert", f"{p.mode} pixels: converted to 8-bit RGB"
    return "keep", None


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """`width` x `height` scaled down (never up) so the longer side is at most `max_side`."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def _format(opts: ImageOptions, limits: ImageLimits) -> tuple[Literal["jpeg", "png"], str]:
    fmt = "jpeg" if opts.output_format == "auto" else opts.output_format
    if fmt not in limits.output_formats:
        raise ValidationError(f"output format {fmt} is not one the provider takes ({', '.join(limits.output_formats)})")
    if opts.output_format == "auto":
        return "jpeg", f"JPEG at quality {limits.jpeg_quality}: the model re-encodes to video, PNG would only add bytes"
    return fmt, f"{fmt.upper()}, as asked"


def plan_image(p: ImageProbe, limits: ImageLimits, opts: ImageOptions = ImageOptions()) -> ImagePlan:
    """Every step that makes `p` provider-ready, with its reason; InputError when it cannot be used."""
    _refuse(p, limits)
    reasons = ["re-encoded without metadata: the photo's EXIF (location, camera) is not sent to the provider"]
    transpose = p.orientation != 1
    if transpose:
        reasons.append(
            f"EXIF orientation {p.orientation}: turned into the pixels "
            f"({p.width}x{p.height} stored, {p.display_width}x{p.display_height} shown)"
        )
    reduce_16_bit = p.bit_depth == 16
    if reduce_16_bit:
        reasons.append("16 bits per channel: reduced to 8")
    colour, why = _colour(p)
    if why:
        reasons.append(why)
    flatten = opts.background if p.has_alpha else None
    if flatten:
        reasons.append(f"transparency flattened onto {flatten}")
    width, height = _fit(p.display_width, p.display_height, limits.image_max_side)
    if min(width, height) < limits.image_min_side:
        raise InputError(
            p.path,
            f"{p.display_width}x{p.display_height} px is too narrow to animate: with its long "
            f"side capped at {limits.image_max_side} px its short side would be "
            f"{min(width, height)} px, under {limits.image_min_side}; crop it closer to square",
        )
    if (width, height) != (p.display_width, p.display_height):
        reasons.append(
            f"{p.display_width}x{p.display_height} scaled to {width}x{height}: the long side is capped "
            f"at {limits.image_max_side} px"
        )
    fmt, why = _format(opts, limits)
    reasons.append(why)
    jpeg = fmt == "jpeg"
    return ImagePlan(
        source=p.path,
        probe=p,
        transpose=transpose,
        reduce_16_bit=reduce_16_bit,
        colour=colour,
        flatten=flatten,
        width=width,
        height=height,
        format=fmt,
        quality=limits.jpeg_quality if jpeg else None,
        min_quality=limits.jpeg_min_quality if jpeg else None,
        max_bytes=limits.image_max_bytes,
        reasons=tuple(reasons),
    )


# ---- execute ----------------------------------------------------------------------------------------


def _eight_bit_grey(im: Image.Image) -> Image.Image:
    """16-bit grey to 8 bit by its high byte (Pillow's convert("L") would clip everything above 255 to white)."""
    return Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), "L")


def _to_srgb(im: Image.Image, plan: ImagePlan) -> Image.Image:
    if plan.colour == "icc":
        source = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode=mode)
        assert converted is not None  # None only when converting in place
        return converted
    if plan.colour == "convert":
        return im.convert("RGBA" if plan.flatten else "RGB")
    return im


def _flatten(im: Image.Image, colour: str) -> Image.Image:
    rgba = im.convert("RGBA")
    flat = Image.new("RGB", rgba.size, colour)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _pixels(plan: ImagePlan) -> Image.Image:
    """The decoded picture with every planned step applied: 8-bit RGB at the planned size."""
    with Image.open(plan.source) as opened:
        if plan.probe.format == "jpeg":  # let libjpeg scale by 1/2, 1/4, 1/8 while decoding, never below the plan
            swapped = plan.probe.orientation in SWAPPING_ORIENTATIONS
            opened.draft(opened.mode, (plan.height, plan.width) if swapped else (plan.width, plan.height))
        opened.load()
        im: Image.Image = opened
        icc = im.info.get("icc_profile")
        if plan.transpose:
            im = ImageOps.exif_transpose(im)
        if plan.reduce_16_bit and im.mode.startswith("I;16"):
            im = _eight_bit_grey(im)
        if icc:
            im.info["icc_profile"] = icc  # kept for _to_srgb whatever the steps before returned
        im = _to_srgb(im, plan)
        im = _flatten(im, plan.flatten) if plan.flatten else im.convert("RGB")
        if im.size != (plan.width, plan.height):
            im = im.resize((plan.width, plan.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return im


def _write(im: Image.Image, plan: ImagePlan, tmp: Path) -> int | None:
    """Encode into `tmp` within plan.max_bytes; the JPEG quality used (None for PNG)."""
    if plan.format == "png":
        im.save(tmp, "PNG", compress_level=6)
        if tmp.stat().st_size > plan.max_bytes:
            raise InputError(
                plan.source,
                f"as PNG it is {tmp.stat().st_size} bytes, over the {plan.max_bytes} byte limit: use JPEG output",
            )
        return None
    quality = plan.quality
    assert quality is not None and plan.min_quality is not None  # a JPEG plan has both
    while True:
        im.save(tmp, "JPEG", quality=quality, optimize=True)
        if tmp.stat().st_size <= plan.max_bytes:
            return quality
        if quality <= plan.min_quality:
            raise InputError(
                plan.source,
                f"still {tmp.stat().st_size} bytes at JPEG quality {quality}, over the {plan.max_bytes} byte limit",
            )
        quality = max(plan.min_quality, quality - QUALITY_STEP)


def execute_image(plan: ImagePlan, dst: str | Path) -> ImageResult:
    """Write the planned image to `dst` (its suffix must be plan.suffix), atomically; nothing left on failure."""
    dst = Path(dst)
    if dst.suffix.lower() not in (plan.suffix, ".jpeg" if plan.format == "jpeg" else plan.suffix):
        raise ValidationError(f"{dst}: a {plan.format.upper()} image needs the suffix {plan.suffix}")
    try:
        im = _pixels(plan)
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:  # truncated or damaged past the header
        raise InputError(plan.source, f"cannot decode the image ({exc})") from None
    with atomic_output(dst) as tmp:
        quality = _write(im, plan, tmp)
        size = tmp.stat().st_size
    log.debug("%s: %dx%d %s, %d bytes", dst.name, im.width, im.height, plan.format, size)
    return ImageResult(dst, plan, im.width, im.height, size, quality)


def conform_image(
    src: str | Path, dst: str | Path, limits: ImageLimits, opts: ImageOptions = ImageOptions()
) -> ImageResult:
    """probe_image -> plan_image -> execute_image."""
    return execute_image(plan_image(probe_image(src), limits, opts), dst)


LAST_FRAME_WINDOW_S = 1.0  # decode only the end of the clip


def last_frame_image(video: str | Path, dst: str | Path) -> Path:
    """The last frame of `video` (its first non-cover-art video stream) written losslessly to `dst` (.png):
    every frame of the final second overwrites the file, so the one left is the last one shown."""
    dst = Path(dst)
    with atomic_output(dst) as tmp:
        frames = ffmpeg.input(media_path(video), sseof=-LAST_FRAME_WINDOW_S)["V:0"]
        out = frames.output(media_path(tmp), f="image2", update=1, vcodec="png").global_args("-v", "error")
        run_ffmpeg(compile_stream(out), what=f"taking the last frame of {Path(video).name}")
        if tmp.stat().st_size == 0:
            raise InputError(video, "no frame could be read from its end")
    return dst
