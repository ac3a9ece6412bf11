"""A fit's history as an animated GIF: the best fit converging, one frame per kept picture.

Pillow (installed with matplotlib) writes the GIF; each frame is the picture
on a canvas the size of the largest one (``bbox_inches="tight"`` makes
pictures differ by a few pixels) under a band with the picture's number,
step, log-likelihood and time.
"""

from __future__ import annotations

import os
from pathlib import Path

from autofit_jaxviz.history import number_or_none, read_index

#: The formats :func:`export_animation` writes, by file suffix.
FORMATS = (".gif",)
BAND_HEIGHT = 28


def export_animation(folder: str | os.PathLike[str], target: str | os.PathLike[str], *,
                     frame_seconds: float = 0.25, last_frame_seconds: float = 2.0) -> int:
    """Write the pictures of the history folder ``folder`` to ``target`` (a
    ``.gif``); returns the number of frames. Raises ``ValueError`` for another
    suffix or a history with no picture on disk."""
    from PIL import Image, ImageDraw, ImageFont

    target = Path(target)
    if target.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot export {str(target)!r}: the animation is written as "
                         f"{', '.join(FORMATS)} (got suffix {target.suffix!r})")
    if not (isinstance(frame_seconds, int | float) and frame_seconds > 0
            and isinstance(last_frame_seconds, int | float) and last_frame_seconds > 0):
        raise ValueError(f"frame_seconds and last_frame_seconds must be > 0, got "
                         f"{frame_seconds!r} and {last_frame_seconds!r}")
    folder = Path(folder)
    frames = []
    for entry in read_index(folder):  # only lines that name a numbered picture
        try:
            with Image.open(folder / entry["file"]) as picture:
                frames.append((entry, picture.convert("RGB")))
        except (OSError, KeyError):
            continue  # dropped by retention while we read: the others still make a film
    if not frames:
        raise ValueError(f"no picture to export in {str(folder)!r} (is it a history folder "
                         "with pictures, such as output/.../image/fit_history?)")
    width = max(p.width for _, p in frames)
    height = max(p.height for _, p in frames) + BAND_HEIGHT
    font = ImageFont.load_default(size=16)
    images = []
    for entry, picture in frames:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(picture, ((width - picture.width) // 2, BAND_HEIGHT))
        log_likelihood = number_or_none(entry.get("log_likelihood"))
        elapsed = number_or_none(entry.get("elapsed"))
        text = (f"#{entry['n']}  step {entry.get('step')}  log L = "
                f"{'n/a' if log_likelihood is None else f'{log_likelihood:.6g}'}"
                + ("" if elapsed is None else f"  t = {elapsed:.0f} s")
                + ("  (final)" if entry.get("final") is True else ""))
        ImageDraw.Draw(canvas).text((8, 5), text, fill="black", font=font)
        images.append(canvas)
    durations = [int(frame_seconds * 1000)] * (len(images) - 1) + [int(last_frame_seconds * 1000)]
    target.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(target, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return len(images)
