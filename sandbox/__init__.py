"""Hardened Docker sandboxes for trials: one fresh container per run.

``Sandbox.run`` blocks; call it from a worker thread. The image comes from
``python -m sandbox.images`` and the engine from ``python -m sandbox.engine start``.

The trial contract, what a trial's code sees and what it leaves:

- Code and parameters. The script is ``/workspace/trial.py``, run by the image's
  ``python3`` with ``/workspace`` (a size-capped tmpfs, also ``HOME``) as its working
  directory. Its parameters, a JSON object, are in the environment variable
  ``PRISM_PARAMS`` and in ``/workspace/params.json``; ``PRISM_TRIAL_ID`` is its id.
- Result. The JSON object in ``/workspace/result.json`` (RESULT_FILE), or when there is
  no such file, the last non-empty line of stdout when it is a JSON object. Either must
  keep the rules of ``prism.trial`` (at most 64 KiB, nested at most 16 deep, integers
  within 64 bits, valid Unicode; NaN and infinities become null), or the trial ends
  ``failed`` naming the rule broken (when its script had succeeded; a failed script
  keeps its own reason and stderr gets the rule). Read only when the script ran to its
  end (outcomes succeeded, failed, oom_killed).
- Intermediate metrics. Each stdout line that starts with exactly ``PRISM_METRIC ``
  (METRIC_PREFIX, one space) is a metric line: the rest must be a JSON object within
  the same rules, the whole line at most 64 KiB, at most 10,000 (MAX_METRICS) of them
  per trial. ``on_metric`` gets each one's values while the trial runs, in order. A
  metric line that breaks a rule stops the trial at once: ``failed``, naming the rule.
  Metric lines stay in stdout and count against the output limit.
- The helper module ``prism_trial`` (importable by the script): ``params()`` returns
  the parameters, ``report(step=1, loss=0.3)`` prints a metric line and flushes,
  ``result(loss=0.1)`` writes the result file. Both take one mapping too.
- Artifacts. The regular files under ``/workspace/output`` (OUTPUT_DIR), recursively,
  named by their path relative to it with "/", in name order, while they fit the caps:
  32 files (MAX_ARTIFACT_FILES) and 4 MiB in all (MAX_ARTIFACT_BYTES); a file that
  would break a cap is skipped and a later, smaller one may still fit. Symlinks (never
  followed), fifos, sockets and devices are skipped too, and so are names that are not
  UTF-8, hold a control character or have a part over 255 bytes. ``artifacts_skipped``
  names each skipped file and why ("name: why"), at most 64 entries, the last one
  counting the rest. Only when the script ran to its end.
- Peak memory: the container's memory cgroup peak (cgroup v1
  ``memory.max_usage_in_bytes``, v2 ``memory.peak``), so the workspace's files and
  the bootstrap's few MiB are included; 0 when unknown (a container the host killed).
- Memory: ``Limits.memory_bytes`` is the ceiling of the trial's processes and of the
  files they write to /workspace, /tmp and /dev/shm (tmpfs is memory).
- When the script exits, every process it left behind is killed: nothing outlives it.
- Outcomes (``prism.trial.Outcome``): succeeded (exit 0), failed (non-zero exit, an
  exception, a signal: the reason has the code, the signal's name and stderr's last
  line; or a broken rule), timed_out (the wall clock), oom_killed (the kernel killed any
  process of the trial for lack of memory, a child the script survived included),
  output_limit, cancelled, sandbox_error (the engine or the sandbox itself failed).
"""

from prism.trial import MAX_SCRIPT_BYTES
from sandbox.bootstrap import (
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_FILES,
    MAX_RESULT_BYTES,
    OUTPUT_DIR,
    RESULT_FILE,
)
from sandbox.container import (
    MAX_METRICS,
    Limits,
    MetricCallback,
    Sandbox,
)
from sandbox.prism_trial import MAX_METRIC_LINE_BYTES, METRIC_PREFIX

__all__ = [
    "MAX_ARTIFACT_BYTES",
    "MAX_ARTIFACT_FILES",
    "MAX_METRICS",
    "MAX_METRIC_LINE_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_SCRIPT_BYTES",
    "METRIC_PREFIX",
    "OUTPUT_DIR",
    "RESULT_FILE",
    "Limits",
    "MetricCallback",
    "Sandbox",
]
