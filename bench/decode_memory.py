"""Peak memory and time of preprocessing one image, per format and mode, against estimate_decode_bytes.

    python -m bench.decode_memory                  # 16 MP, the service's preprocessing
    python -m bench.decode_memory --legacy         # the same, with the whole-image conversion
    python -m bench.decode_memory --megapixels 64 --case "RGBA PNG" --case "I;16 PNG"

Pillow allocates image memory with malloc, outside tracemalloc's view, so each image is preprocessed in a
fresh interpreter and measured by the kernel: peak RSS (VmHWM, reset after the header is read) minus the
RSS at that moment.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MB = 1_000_000
EXIF_ORIENTATION = 0x0112


def _base(size: tuple[int, int]) -> Image.Image:
    """A smooth ramp with a little noise: cheap to encode at 64 MP, not a single compressed run."""
    width, height = size
    ramp = Image.linear_gradient("L").resize((width, height), Image.Resampling.NEAREST)
    noise = Image.effect_noise((256, 256), 8).convert("L").resize((width, height), Image.Resampling.NEAREST)
    return Image.blend(ramp, noise, 0.1)


def _save(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def _rgba(size: tuple[int, int]) -> Image.Image:
    gray = _base(size)
    flipped = gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return Image.merge("RGBA", (gray, flipped, gray, gray.point(lambda v: 255 - v)))


def _palette(size: tuple[int, int], transparency: bool) -> bytes:
    image = _base(size).convert("P")
    image.putpalette(bytes(range(256)) * 3)
    return _save(image, "PNG", **({"transparency": bytes(range(256))} if transparency else {}))


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return exif


CASES: dict[str, Callable[[tuple[int, int]], bytes]] = {
    "1 PNG": lambda size: _save(_base(size).convert("1"), "PNG"),
    "L PNG": lambda size: _save(_base(size), "PNG"),
    "LA PNG": lambda size: _save(_rgba(size).convert("LA"), "PNG"),
    "P PNG": lambda size: _palette(size, transparency=False),
    "P+transparency PNG": lambda size: _palette(size, transparency=True),
    "RGB PNG": lambda size: _save(_rgba(size).convert("RGB"), "PNG"),
    "RGBA PNG": lambda size: _save(_rgba(size), "PNG"),
    "RGBA PNG, EXIF rotated": lambda size: _save(_rgba(size), "PNG", exif=_exif(6)),
    "I;16 PNG": lambda size: _save(_base(size).convert("I").point(lambda v: v * 257).convert("I;16"), "PNG"),
    "I TIFF": lambda size: _save(_base(size).convert("I").point(lambda v: v * 257), "TIFF", compression="tiff_deflate"),
    "F TIFF": lambda size: _save(_base(size).convert("F"), "TIFF", compression="tiff_deflate"),
    "CMYK TIFF": lambda size: _save(_rgba(size).convert("CMYK"), "TIFF", compression="tiff_deflate"),
    "RGB JPEG": lambda size: _save(_rgba(size).convert("RGB"), "JPEG", quality=90),
    "RGB JPEG progressive": lambda size: _save(_rgba(size).convert("RGB"), "JPEG", quality=90, progressive=True),
    "CMYK JPEG": lambda size: _save(_rgba(size).convert("CMYK"), "JPEG", quality=90),
    "RGBA WEBP lossless": lambda size: _save(_rgba(size), "WEBP", lossless=True, quality=0, method=0),
    "P GIF": lambda size: _save(_base(size), "GIF"),
    "RGB BMP": lambda size: _save(_rgba(size).convert("RGB"), "BMP"),
}
# libwebp's limit is 16383 pixels a side.
MAX_SIDE = {"RGBA WEBP lossless": 16383}


@dataclass(frozen=True)
class Measurement:
    case: str
    size: tuple[int, int]
    file_bytes: int
    peak_bytes: int
    estimate_bytes: int
    seconds: float


def _child(path: Path, legacy: bool) -> None:
    """Runs in the fresh interpreter: header, estimate, then one preprocessing under a reset VmHWM."""
    from service.core.preprocessing import DEFAULT_MAX_PIXELS, estimate_decode_bytes, open_image, preprocess_image

    if legacy:
        from bench.legacy_preprocessing import legacy_preprocess_bytes as run
    else:
        def run(data: bytes) -> object:
            return preprocess_image(image)

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} missing from /proc/self/status")

    data = path.read_bytes()
    image = open_image(data, 4 * DEFAULT_MAX_PIXELS)
    estimate = estimate_decode_bytes(image)
    # Writing 5 resets the peak to the current RSS (Linux >= 4.0), so the header and imports are not counted.
    Path("/proc/self/clear_refs").write_text("5")
    base = status("VmRSS:")
    start = time.perf_counter()
    run(data)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak": status("VmHWM:") - base, "estimate": estimate, "seconds": seconds}))


def measure(case: str, data: bytes, size: tuple[int, int], legacy: bool = False) -> Measurement:
    with tempfile.NamedTemporaryFile(suffix=".img") as file:
        file.write(data)
        file.flush()
        command = [sys.executable, "-m", "bench.decode_memory", "--child", file.name]
        result = subprocess.run(command + (["--legacy"] if legacy else []), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {case} failed:\n{result.stderr[-3000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return Measurement(case, size, len(data), answer["peak"], answer["estimate"], answer["seconds"])


def size_for(case: str, megapixels: float) -> tuple[int, int]:
    side = min(MAX_SIDE.get(case, 1 << 30), round(math.sqrt(megapixels * 1e6)))
    return side, min(MAX_SIDE.get(case, 1 << 30), round(megapixels * 1e6 / side))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=16.0)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    parser.add_argument("--legacy", action="store_true", help="the whole-image conversion")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case: the highest peak, the shortest time")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.legacy)
        return 0
    print(f"{'case':26} {'size':>11} {'file MB':>8} {'peak MB':>8} {'estimate MB':>11} {'est/peak':>8} {'s':>6}")
    for case in args.case or CASES:
        size = size_for(case, args.megapixels)
        data = CASES[case](size)
        runs = [measure(case, data, size, args.legacy) for _ in range(args.repeat)]
        m = max(runs, key=lambda run: run.peak_bytes)
        seconds = min(run.seconds for run in runs)
        print(
            f"{case:26} {f'{size[0]}x{size[1]}':>11} {m.file_bytes / MB:8.2f} {m.peak_bytes / MB:8.0f} "
            f"{m.estimate_bytes / MB:11.0f} {m.estimate_bytes / max(m.peak_bytes, 1):8.2f} {seconds:6.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
