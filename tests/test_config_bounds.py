"""A setting that must be above zero is refused at load by name, in every section that has one (config/sections/bounds.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.sections.bounds import require_positive
from config.sections.distribution import DistributionSettings
from config.sections.sync import SyncSettings
from config.sections.worker import WorkerSettings
from config.settings import load_config
from eventbus.errors import InvalidConfig

POSITIVE = {
    "distribution": ("retry_initial_s", "retry_max_s", "idle_timeout_s", "check_interval_s", "complete_check_s",
                     "store_gc_interval_s"),
    "sync": ("max_batch_age_h", "plan_interval_s", "retry_after_s", "retry_max_s", "transfer_timeout_s", "poll_initial_s",
             "poll_max_s", "idle_timeout_s", "store_ttl_h"),
    "worker": ("grace_s", "default_timeout_s", "progress_interval_s", "watch_interval_s", "gpu_sample_s", "shutdown_grace_s",
               "pull_expires_s"),
}
CASES = [(section, key, value) for section, keys in POSITIVE.items() for key in keys for value in (0, -1.5)]


@pytest.mark.parametrize(("section", "key", "value"), CASES)
def test_a_setting_at_or_below_zero_is_refused_naming_file_section_and_key(
    tmp_path: Path, section: str, key: str, value: float
) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(InvalidConfig) as refused:
        load_config(path)
    assert str(refused.value) == f"{path}: {section}: {key} must be > 0, got {float(value)}"


def test_a_job_kinds_timeout_is_named_with_its_map() -> None:
    with pytest.raises(ValueError, match=r"^timeouts_s\.selfplay must be > 0, got 0$"):
        WorkerSettings(timeouts_s={"training": 60, "selfplay": 0})


def test_the_defaults_and_positive_values_load() -> None:
    for settings in (DistributionSettings(), SyncSettings(), WorkerSettings(timeouts_s={"selfplay": 1})):
        names = POSITIVE[type(settings).__name__.removesuffix("Settings").lower()]
        assert all(getattr(settings, name) > 0 for name in names)


def test_the_first_offending_name_is_reported_and_extra_values_follow_the_named_ones() -> None:
    settings = SyncSettings()
    require_positive(settings, "retry_max_s", more={"x": 1})
    with pytest.raises(ValueError, match=r"^b must be > 0, got -1$"):
        require_positive(settings, "retry_max_s", more={"b": -1, "a": 0})
    with pytest.raises(AttributeError):
        require_positive(settings, "no_such_setting")
