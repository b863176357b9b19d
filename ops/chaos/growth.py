"""What a soak measures, pure: growth per hour of memory, descriptors and logs, and the fraction of time the fleet worked.

Samples are taken by the soak's sampler (ops/bench/bench_soak.py); a process that a fault
restarted gets a new pid, so each (host, process) is judged on its longest-lived pid's samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from ops.chaos.report import Point


class ProcessSample(msgspec.Struct, frozen=True, kw_only=True):
    """One process at one moment."""

    t: float
    host: str
    name: str
    pid: int
    rss_bytes: int
    fds: int


class Growth(msgspec.Struct, frozen=True, kw_only=True):
    """One (host, process)'s growth per hour over its longest-lived pid, and how long that was watched."""

    rss_mib_per_h: float
    fds_per_h: float
    watched_s: float
    rss_mib_last: float


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; 0 with fewer than two distinct times."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600.0


def process_growth(samples: Iterable[ProcessSample]) -> dict[str, Growth]:
    """Per "host/process": growth of its longest-watched pid (job processes come and go: left out)."""
    by_pid: dict[tuple[str, str, int], list[ProcessSample]] = {}
    for s in samples:
        if not s.name.startswith("job:"):
            by_pid.setdefault((s.host, s.name, s.pid), []).append(s)
    longest: dict[str, list[ProcessSample]] = {}
    for (host, name, _), series in by_pid.items():
        key = f"{host}/{name}"
        span = series[-1].t - series[0].t
        if key not in longest or span > longest[key][-1].t - longest[key][0].t:
            longest[key] = series
    return {key: Growth(rss_mib_per_h=round(slope_per_hour([(s.t, s.rss_bytes / 2**20) for s in series]), 3),
                        fds_per_h=round(slope_per_hour([(s.t, float(s.fds)) for s in series]), 3),
                        watched_s=round(series[-1].t - series[0].t, 1), rss_mib_last=round(series[-1].rss_bytes / 2**20, 1))
            for key, series in sorted(longest.items())}


def led_at(t: float, timeline: Sequence[Point]) -> bool:
    """Whether a scheduler leader held office at `t`: elected, and not stepped down since."""
    holder = ""
    for p in timeline:
        if p.t > t:
            break
        if p.type == "LEADER_ELECTED":
            holder = p.node
        elif p.type == "LEADER_LOST" and p.node == holder:
            holder = ""
    return bool(holder)


def availability(sample_times: Sequence[float], timeline: Sequence[Point], window_s: float) -> float:
    """The fraction of sample times with a scheduler leader in office and an assignment stored within `window_s` before."""
    if not sample_times:
        return 0.0
    assigned = [p.t for p in timeline if p.type == "WORK_ASSIGNED"]
    working = sum(1 for t in sample_times if led_at(t, timeline) and any(t - window_s <= a <= t for a in assigned))
    return round(working / len(sample_times), 4)


def worst(growth: Mapping[str, Growth], top: int = 5) -> dict[str, Growth]:
    """The processes whose memory grew fastest."""
    return dict(sorted(growth.items(), key=lambda kv: -kv[1].rss_mib_per_h)[:top])
