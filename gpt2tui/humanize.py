"""Numbers as people read them on a small screen: durations, ages, counts, rates."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """3725 -> '1:02:05'; 65 -> '1:05'; days for very long runs; '–' for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(max(0, seconds))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours or days else f"{minutes}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


def age(seconds: float | None) -> str:
    """How long ago, to one unit: '12s', '5m', '3h', '2d'."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def count(n: float | None) -> str:
    """1234567 -> '1.23M'; 34000 -> '34.0K'."""
    if n is None or not math.isfinite(n):
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}" if abs(n) / size < 100 else f"{n / size:.0f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def number(x: float | None, digits: int = 4) -> str:
    """A loss or a learning rate: significant digits, '–' for missing or NaN."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"
