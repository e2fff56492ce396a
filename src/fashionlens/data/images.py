"""Robust image reading for real-world photos.

Phone photos arrive EXIF-rotated, as HEIC (iPhones' default), CMYK JPEGs, 16-bit PNGs,
palettes with transparency, or truncated by a failed upload. Everything funnels through
`load_image`, which returns an 8-bit RGB image or raises `ImageError` naming the file.
Files are only ever opened for reading, and only regular files are opened (a FIFO named
`.jpg` would block the reader forever).

Memory is bounded by bytes, not pixels: a 226 KB PNG can declare 10,900 x 10,900 16-bit
pixels, and decoding it naively took 1.8 GB. Before a pixel is decoded, the bytes the
decode and the conversion to RGB will hold (`decode_cost`: Pillow's bytes per pixel of
the file's mode x pixels, plus the converted copies) are worked out from the header; a
photo above `MAX_DECODE_BYTES` is refused. Big photos are decoded reduced where the
format allows (JPEG's draft mode) and shrunk with Pillow's `reduce` right after
decoding when the caller only needs about `draft_size` pixels, 16-bit images are
converted in strips, and every decode takes its bytes from one process-wide
`DECODE_BUDGET`, so concurrent decodes (the service's threads) wait rather than add up.
"""

from __future__ import annotations

import contextlib
import io
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError

from ..errors import ImageError

# HEIC/HEIF through Pillow's plug-in mechanism: every reader below gets them for free.
pillow_heif.register_heif_opener()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                    ".heic", ".heif")
# Photos above this many pixels are refused as likely decompression bombs
# (a 12000 x 8000 photo is 96 MP; Pillow's own default warns at 89 MP).
MAX_PIXELS = 120_000_000
# Long side / short side above this is refused before any resize: resizing the short side
# of a 1 x 20000 strip to 256 px would make a 256 x 5,120,000 image (5-6 GB). The widest
# of the 36,086 photos in the three development sets is 2.34:1; phone panoramas reach
# about 6:1, which still passes.
MAX_ASPECT_RATIO = 10.0
# The most memory one photo's decode and conversion may take: a 120 MP RGB photo (Pillow
# holds 4 bytes a pixel) fits; a 16-bit 10,900^2 PNG decoded as 32-bit ints does not.
MAX_DECODE_BYTES = 512 * 1024 * 1024
# Decoded photos above this size are shrunk with `reduce` right after decoding when the
# caller asked for a `draft_size` (16 MP of RGB); smaller ones are read exactly as before.
REDUCE_ABOVE_BYTES = 64 * 1024 * 1024
# What all the decodes running at once in one process may hold (see DecodeBudget; the
# service sets it from its `decode_memory_mb` setting).
DEFAULT_DECODE_BUDGET = 1024 * 1024 * 1024
# Rows of a 16-bit image converted at a time hold about this many pixels.
_STRIP_PIXELS = 1 << 20


def _pixel_bytes(mode: str) -> int:
    """Bytes Pillow holds per pixel of `mode` (bands of 8 bits are padded to 4 bytes)."""
    try:
        info = ImageMode.getmode(mode)
    except KeyError:
        return 4
    itemsize = np.dtype(info.typestr).itemsize
    return 4 * itemsize if len(info.bands) > 1 else itemsize


def _reduce_factor(size: tuple[int, int], mode: str, draft_size: int | None) -> int:
    """How much a big photo is shrunk right after decoding (1: not at all): its short
    side stays at least `draft_size`, so resizing it afterwards gives the same photo."""
    width, height = size
    if not draft_size or width * height * _pixel_bytes(mode) <= REDUCE_ABOVE_BYTES:
        return 1
    return max(1, min(width, height) // draft_size)


def _is_wide(mode: str) -> bool:
    return mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def decode_cost(size: tuple[int, int], mode: str, draft_size: int | None = None) -> int:
    """The bytes reading a photo of this size and mode (after any JPEG draft) holds at
    its peak: the decoded pixels, the copies converting them to 8-bit RGB make (an 8-bit
    grey copy of a 16-bit image, RGBA for transparency) and the result."""
    width, height = size
    pixels = width * height
    factor = _reduce_factor(size, mode, draft_size)
    kept = (width // factor) * (height // factor) if factor > 1 else pixels
    cost = pixels * _pixel_bytes(mode)
    if _is_wide(mode):
        cost += pixels  # converted to 8-bit grey in strips, at full size
    elif mode in ("P", "PA", "1") and factor > 1:
        cost += pixels * 4  # converted before reducing (reduce cannot take these modes)
    per_pixel = 8 if mode in ("RGBA", "LA", "RGBa", "La", "PA", "P") else 4
    return cost + kept * per_pixel * (2 if factor == 1 else 1)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"


class DecodeBudget:
    """The bytes all decodes of this process may hold at once: a decode takes its
    `decode_cost` before it starts and gives it back when done; one that does not fit
    waits for others to finish (a cost above the whole budget runs alone)."""

    def __init__(self, total: int = DEFAULT_DECODE_BUDGET) -> None:
        self.total = total
        self.used = 0
        self.peak = 0  # the most ever held at once (for tests and the load test)
        self._cond = threading.Condition()

    def resize(self, total: int) -> None:
        with self._cond:
            self.total = max(1, int(total))
            self._cond.notify_all()

    @contextlib.contextmanager
    def reserve(self, cost: int) -> Iterator[None]:
        with self._cond:
            amount = min(cost, self.total)
            self._cond.wait_for(lambda: self.used == 0 or self.used + amount <= self.total)
            self.used += amount
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= amount
                self._cond.notify_all()


DECODE_BUDGET = DecodeBudget()


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _wide_to_grey(img: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit grey image stretched to 8 bits (its darkest pixel black, its
    brightest white), converted a strip of rows at a time: converting it whole made
    float copies of 4 bytes a pixel, several at once."""
    width, height = img.size
    lo, hi = (float(v) for v in img.getextrema())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        arr = np.asarray(img.crop((0, top, width, bottom)), dtype=np.float32)
        out[top:bottom] = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """`img` shrunk `factor` times (box average), in a mode `reduce` takes."""
    if _is_wide(img.mode):
        img = _wide_to_grey(img)
    elif img.mode in ("P", "PA", "1"):
        img = img.convert("RGBA" if img.mode != "1" and ("transparency" in img.info
                                                         or img.mode == "PA") else
                          "L" if img.mode == "1" else "RGB")
    return img.reduce(factor)


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 when there is none or it cannot be read)."""
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(img.getexif().get(0x0112, 1))
    return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    if _is_wide(img.mode):
        img = _wide_to_grey(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


@contextlib.contextmanager
def _pillow_errors(label: str) -> Iterator[None]:
    """Pillow's exceptions while opening or decoding, as ImageError naming the file."""
    with warnings.catch_warnings():
        # MAX_PIXELS is the limit: Pillow's lower warning threshold (89 MP) must not refuse
        # a 96 MP phone photo. Pillow's hard limit (twice that) still raises an error.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns (with its own file path) about corrupt EXIF blocks and the like; the
        # photo is still read, so the user gets no warning they cannot act on.
        warnings.simplefilter("ignore", UserWarning)
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(label, f"refused as a possible decompression bomb ({exc})") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(label, "not an image file Pillow can read") from exc
        except FileNotFoundError as exc:
            raise ImageError(label, "file not found") from exc
        except IsADirectoryError as exc:
            raise ImageError(label, "is a folder, not an image file") from exc
        except PermissionError as exc:
            raise ImageError(label, "permission denied") from exc
        except MemoryError as exc:
            raise ImageError(label, "not enough memory to decode it") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(label, f"corrupt or truncated image ({exc})") from exc


def _check_header(img: Image.Image, label: str, draft_size: int | None) -> int:
    """Refuse sizes no photo has, before a pixel is decoded; the decode's cost in bytes."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(label, f"image is {width}x{height} pixels, above the limit of "
                                f"{MAX_PIXELS:,} (possible decompression bomb)")
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise ImageError(label, f"image is {width}x{height} pixels: its sides differ by more "
                                f"than {MAX_ASPECT_RATIO:g} to 1, which is no photo of a "
                                "garment")
    cost = decode_cost(img.size, img.mode, draft_size)
    if cost > MAX_DECODE_BYTES:
        raise ImageError(label, f"image is {width}x{height} pixels of mode {img.mode}: "
                                f"reading it would take {_megabytes(cost)} of memory, above "
                                f"the limit of {_megabytes(MAX_DECODE_BYTES)}")
    return cost


def _decode(source: Path | bytes, label: str, draft_size: int | None) -> Image.Image:
    """Open, check, decode (reduced where possible), turn upright and convert to RGB,
    holding the decode's bytes from DECODE_BUDGET throughout."""
    with _pillow_errors(label):
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        opened = Image.open(fp)
    img = opened
    try:
        with _pillow_errors(label):
            if draft_size and opened.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far
                # larger than needed: several times faster, same result after resizing.
                opened.draft("RGB", (draft_size, draft_size))
            cost = _check_header(opened, label, draft_size)
        with DECODE_BUDGET.reserve(cost):
            with _pillow_errors(label):
                opened.load()
                factor = _reduce_factor(opened.size, opened.mode, draft_size)
                if factor > 1:
                    # Read by the original's EXIF: the reduced copy has none.
                    orientation = _orientation(opened)
                    img = _reduced(opened, factor)
                    opened.close()  # its pixels: the most memory this photo holds
                    if orientation in _TRANSPOSE:
                        img = img.transpose(_TRANSPOSE[orientation])
            if factor == 1:
                # A broken EXIF block must not lose the photo, nor print Pillow's warning.
                with contextlib.suppress(Exception), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    img = ImageOps.exif_transpose(opened)
            mode = img.mode
            try:
                result = _to_rgb(img)
            except MemoryError as exc:
                raise ImageError(label, "not enough memory to convert it to RGB") from exc
            except (OSError, ValueError) as exc:
                raise ImageError(label, f"cannot convert {mode} image to RGB ({exc})") from exc
    except BaseException:
        opened.close()  # a refused photo must not keep its file open until collected
        raise
    if result is not opened:
        opened.close()  # multi-frame formats (GIF, TIFF) keep their file open otherwise
    return result


def load_image(source: str | Path | bytes, *, draft_size: int | None = None,
               name: str | None = None) -> Image.Image:
    """Read a photo as upright 8-bit RGB.

    `draft_size` lets big photos be decoded reduced (JPEG) or shrunk right after decoding
    when the caller will resize them to about that size anyway (short side at least
    `draft_size`). `name` labels byte input in error messages.
    """
    if isinstance(source, bytes | bytearray):
        label = name or "<uploaded image>"
        if not source:
            raise ImageError(label, "empty file")
        return _decode(bytes(source), label, draft_size)
    path = Path(source)
    label = name or str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(label, "file not found") from None
    except OSError as exc:
        raise ImageError(label, f"cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(mode):
        raise ImageError(label, "is a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageError(label, "not a regular file (a pipe, socket or device)")
    if path.stat().st_size == 0:
        raise ImageError(label, "empty file")
    return _decode(path, label, draft_size)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Shrink (never enlarge) so the short side is `size`, keeping the aspect ratio."""
    w, h = img.size
    short = min(w, h)
    if short <= size:
        return img
    scale = size / short
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
