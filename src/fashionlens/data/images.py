"""Robust image reading for real-world photos.

Phone photos arrive EXIF-rotated, as HEIC (iPhones' default), CMYK JPEGs, 16-bit PNGs,
palettes with transparency, or truncated by a failed upload. Everything funnels through
`load_image`, which returns an 8-bit RGB image or raises `ImageError` naming the file.
Files are only ever opened for reading, and only regular files are opened (a FIFO named
`.jpg` would block the reader forever).
"""

from __future__ import annotations

import contextlib
import io
import stat
import warnings
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

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


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _open(source: Path | bytes, label: str, draft_size: int | None) -> Image.Image:
    with warnings.catch_warnings():
        # MAX_PIXELS is the limit: Pillow's lower warning threshold (89 MP) must not refuse
        # a 96 MP phone photo. Pillow's hard limit (twice that) still raises an error.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns (with its own file path) about corrupt EXIF blocks and the like; the
        # photo is still read, so the user gets no warning they cannot act on.
        warnings.simplefilter("ignore", UserWarning)
        try:
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            img = Image.open(fp)
            try:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        label,
                        f"image is {width}x{height} pixels, above the limit of {MAX_PIXELS:,} "
                        "(possible decompression bomb)",
                    )
                if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
                    raise ImageError(
                        label,
                        f"image is {width}x{height} pixels: its sides differ by more than "
                        f"{MAX_ASPECT_RATIO:g} to 1, which is no photo of a garment",
                    )
                if draft_size and img.format == "JPEG":
                    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far
                    # larger than needed: several times faster, same result after resizing.
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
            except BaseException:
                img.close()  # do not leave the file open until garbage collection
                raise
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
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(label, f"corrupt or truncated image ({exc})") from exc
    return img


def load_image(source: str | Path | bytes, *, draft_size: int | None = None,
               name: str | None = None) -> Image.Image:
    """Read a photo as upright 8-bit RGB.

    `draft_size` lets JPEG decoding shrink the image on the fly when the caller will
    resize it to about that size anyway. `name` labels byte input in error messages.
    """
    if isinstance(source, bytes | bytearray):
        label = name or "<uploaded image>"
        if not source:
            raise ImageError(label, "empty file")
        img = _open(bytes(source), label, draft_size)
    else:
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
        img = _open(path, label, draft_size)
    opened = img
    # A broken EXIF block must not lose the photo, nor print Pillow's warning about it.
    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = ImageOps.exif_transpose(img)
    try:
        img = _to_rgb(img)
    except (OSError, ValueError) as exc:
        raise ImageError(label, f"cannot convert {img.mode} image to RGB ({exc})") from exc
    finally:
        if img is not opened:
            opened.close()  # multi-frame formats (GIF, TIFF) keep their file open otherwise
    return img


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Shrink (never enlarge) so the short side is `size`, keeping the aspect ratio."""
    w, h = img.size
    short = min(w, h)
    if short <= size:
        return img
    scale = size / short
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
