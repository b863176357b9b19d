"""A line chart written as a PNG with numpy and zlib alone (no plotting library is a dependency of rr).

Series of (x, y, error) points become lines with error bars on a white canvas with a grid; axis
ticks are labelled with a 3x5 pixel font of digits, so the figure is readable on its own.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

Point = tuple[float, float, float]  # x, y, half-width of the y interval

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
_GLYPHS = {  # 3 columns x 5 rows, one string per row
    "0": ("111", "101", "101", "101", "111"), "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"), "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"), "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"), "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"), "9": ("111", "101", "111", "001", "111"),
    "-": ("000", "000", "111", "000", "000"), ".": ("000", "000", "000", "000", "010"), " ": ("000",) * 5,
}


def _text(img: np.ndarray, x: int, y: int, text: str, scale: int = 2) -> None:
    for k, ch in enumerate(text):
        for r, row in enumerate(_GLYPHS.get(ch, _GLYPHS[" "])):
            for c, bit in enumerate(row):
                if bit == "1":
                    x0, y0 = x + (k * 4 + c) * scale, y + r * scale
                    img[y0:y0 + scale, x0:x0 + scale] = 0


def _line(img: np.ndarray, a: tuple[int, int], b: tuple[int, int], color: tuple[int, int, int], width: int = 2) -> None:
    steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
    for t in np.linspace(0.0, 1.0, steps + 1):
        x, y = round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t)
        img[max(0, y - width // 2):y + (width + 1) // 2, max(0, x - width // 2):x + (width + 1) // 2] = color


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count or 1.0
    step = min((m * 10 ** np.floor(np.log10(raw)) for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
    return [float(v) for v in np.arange(np.ceil(lo / step) * step, hi + 1e-9, step)]


def write_png(path: Path, img: np.ndarray) -> None:
    """An RGB uint8 array as a PNG file."""
    height, width, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


def _label(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def line_chart(series: list[list[Point]], path: Path, width: int = 800, height: int = 420,
               levels: list[float | None] | None = None) -> None:
    """The series (colours in order) over shared axes, ticks labelled; `levels[k]`: a dashed level in series k's colour."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 60, 20, 20, 40
    levels = levels or []
    points = [p for s in series for p in s] + [(0.0, y, 0.0) for y in levels if y is not None] or [(0.0, 0.0, 0.0)]
    x0, x1 = min(0.0, *(p[0] for p in points)), max(1.0, *(p[0] for p in points))
    x1 += (x1 - x0) * 0.03  # the newest point off the frame's edge
    y0 = min(0.0, *(p[1] - p[2] for p in points))
    y1 = max(y0 + 1.0, *(p[1] + p[2] for p in points))

    def px(x: float) -> int:
        return round(left + (x - x0) / (x1 - x0) * (width - left - right))

    def py(y: float) -> int:
        return round(top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom))

    for v in _ticks(y0, y1):
        img[py(v), left:width - right] = 225
        _text(img, 4, py(v) - 5, _label(v).rjust(5))
    for v in _ticks(x0, x1):
        img[top:height - bottom, px(v)] = 235
        _text(img, px(v) - 8, height - bottom + 8, _label(v))
    img[height - bottom, left:width - right] = 0
    img[top:height - bottom, left] = 0
    for k, s in enumerate(series):
        color = COLORS[k % len(COLORS)]
        level = levels[k] if k < len(levels) else None
        if level is not None:
            for dash in range(left, width - right, 12):
                img[py(level), dash:dash + 6] = color
        for a, b in zip(s, s[1:]):
            _line(img, (px(a[0]), py(a[1])), (px(b[0]), py(b[1])), color)
        for x, y, err in s:
            _line(img, (px(x), py(y - err)), (px(x), py(y + err)), color, width=1)
            img[py(y) - 3:py(y) + 4, px(x) - 3:px(x) + 4] = color
    write_png(path, img)
