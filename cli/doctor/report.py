"""`rr doctor`'s output, pure: a table for people (each failure followed by its fix) or one JSON object."""

from __future__ import annotations

import msgspec

from cli.doctor.checks import CheckResult, level, passed


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The whole verdict, as `rr doctor --json` prints it."""

    ok: bool
    node: str
    nats_url: str
    checks: list[CheckResult]


def build_report(node: str, nats_url: str, results: list[CheckResult]) -> Report:
    """The report of a run; `ok` is the exit status's meaning."""
    return Report(ok=passed(results), node=node, nats_url=nats_url, checks=results)


def as_json(report: Report) -> str:
    """One JSON object."""
    return msgspec.json.encode(report).decode()


def as_table(report: Report) -> str:
    """One line per check, each failure or warning followed by its fix, then a summary line."""
    width = max((len(r.name) for r in report.checks), default=10)
    lines = [f"rr doctor: node {report.node}, NATS {report.nats_url}"]
    for result in report.checks:
        lines.append(f"  {level(result):<5} {result.name:<{width}}  {result.detail}")
        if not result.ok and result.fix:
            lines.append(f"  {'':<5} {'':<{width}}  fix: {result.fix}")
    failed = sum(1 for r in report.checks if level(r) == "FAIL")
    warned = sum(1 for r in report.checks if level(r) == "warn")
    verdict = "ready" if report.ok else "NOT ready"
    lines.append(f"{verdict}: {len(report.checks)} checks, {failed} failed, {warned} warnings")
    return "\n".join(lines)
