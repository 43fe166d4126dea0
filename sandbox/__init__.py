"""Hardened Docker sandboxes for trials: one fresh container per run.

``Sandbox.run`` blocks; call it from a worker thread. The image comes from
``python -m sandbox.images`` and the engine from ``python -m sandbox.engine start``.
"""

from sandbox.container import MAX_SCRIPT_BYTES, OUTCOMES, Execution, Limits, Sandbox

__all__ = ["MAX_SCRIPT_BYTES", "OUTCOMES", "Execution", "Limits", "Sandbox"]
