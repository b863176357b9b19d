"""Worker settings (`worker:` in the rr config): command templates, limits, timeouts, where jobs write."""

from __future__ import annotations

import msgspec

from config.sections.bounds import require_positive
from config.sections.templates import DEFAULT_TEMPLATES, TemplateError, split_template

# The scheduler's default attempt deadlines; a job still running past its timeout is stopped.
DEFAULT_TIMEOUTS_S: dict[str, float] = {
    "selfplay": 3600.0, "training": 7200.0, "evaluation": 1800.0, "tournament": 3600.0, "sync": 900.0,
}


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a node's worker runs the jobs assigned to it."""

    # Where attempts write (<data_dir>/worker/<node>/...); None: RR_DATA_DIR, else $XDG_DATA_HOME/rr, else ~/.local/share/rr.
    data_dir: str | None = None
    # Best models, named as the seeds' nodes keep them: ringrift_best_<board>_<n>p.pth. None: <data dir>/models.
    models_dir: str | None = None
    python: str | None = None  # interpreter for {python}; None: the one running the worker
    templates: dict[str, str] = {}  # work_type -> command; merged over DEFAULT_TEMPLATES
    timeouts_s: dict[str, float] = {}  # work_type -> seconds; merged over DEFAULT_TIMEOUTS_S
    default_timeout_s: float = 3600.0  # for a work type neither map names
    grace_s: float = 60.0  # SIGTERM, then SIGKILL this much later (the seeds' RINGRIFT_JOB_GRACE_PERIOD)
    shutdown_grace_s: float = 5.0  # the same when the worker itself stops (it has ~10 s in all)
    max_processes: int = 128  # runaway cap on the node's job processes (RINGRIFT_RUNAWAY_SELFPLAY_PROCESS_THRESHOLD)
    stuck_after_s: float = 600.0  # no progress line (or an idle GPU) this long: stuck (RINGRIFT_GPU_IDLE_THRESHOLD); 0 off
    # On a node with nvidia-smi, a GPU job (training, or one given a model) whose GPU sits idle
    # for stuck_after_s is stuck too.
    gpu_idle_check: bool = True
    gpu_sample_s: float = 15.0  # how often nvidia-smi is asked while jobs run
    progress_interval_s: float = 10.0  # at most one WORK_PROGRESS per job this often, plus the first
    max_parallel_jobs: int = 2  # when the hosts file does not list this node
    stderr_tail_bytes: int = 2048
    data_wait_s: float = 600.0  # a training job waits this long for its batches to be synced to this node
    candidate_wait_s: float = 300.0  # an evaluation waits this long for its candidate to reach the models bucket
    watch_interval_s: float = 1.0  # how often running jobs are checked for timeouts, stuck and runaways
    # How long each pull request of the worker's consumers lasts: a stop waits for the open one to
    # expire, so a shorter one stops sooner at the price of more requests while idle.
    pull_expires_s: float = 2.0

    def __post_init__(self) -> None:
        for key, template in self.templates.items():
            try:
                split_template(key, template)
            except TemplateError as exc:
                raise ValueError(str(exc).removeprefix("worker.")) from None
        require_positive(self, "grace_s", "default_timeout_s", "progress_interval_s", "watch_interval_s", "gpu_sample_s",
                         "shutdown_grace_s", "pull_expires_s", more={f"timeouts_s.{k}": v for k, v in self.timeouts_s.items()})
        if self.max_processes < 1 or self.max_parallel_jobs < 1 or self.stderr_tail_bytes < 1:
            raise ValueError("max_processes, max_parallel_jobs and stderr_tail_bytes must be >= 1")
        if self.stuck_after_s < 0:
            raise ValueError(f"stuck_after_s must be >= 0 (0 turns stuck detection off), got {self.stuck_after_s}")
        if min(self.data_wait_s, self.candidate_wait_s) < 0:
            raise ValueError("data_wait_s and candidate_wait_s must be >= 0 (0: no waiting)")

    def template_for(self, work_type: str) -> str | None:
        """The command template of a work type, or None when neither the config nor the defaults have one."""
        return self.templates.get(work_type) or DEFAULT_TEMPLATES.get(work_type)

    def timeout_for(self, work_type: str) -> float:
        """Seconds a job of this type may run."""
        return self.timeouts_s.get(work_type) or DEFAULT_TIMEOUTS_S.get(work_type) or self.default_timeout_s

