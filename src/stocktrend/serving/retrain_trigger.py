"""An alert that leads to action: the monitor submits the retrain job for a model.

Off by default (``ServeArgs.retrain_on_alert``). When a version of a model raises one of the
configured alerts, the one ``Monitor`` replica submits ``ray_jobs/retrain.py --model <folder>``
through Ray's job API, at most once per model per ``min_interval_hours``: the time of the
last submission is kept in ``models/<name>/.retrain-trigger.json`` (written atomically), so a
restarted monitor does not submit again. The job itself is safe to submit twice: it takes
the model folder's lock, and does only the next step of a retrain in progress.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MARKER = ".retrain-trigger.json"


class RetrainTrigger:
    def __init__(self, config: dict[str, Any], model_dirs: dict[str, str]):
        self.config, self.model_dirs = config, model_dirs
        self.checked_at: dict[tuple[str, str], float] = {}
        self.last: dict[str, float] = {}  # also kept here: the marker may not be writable
        self.lock = threading.Lock()

    def due(self, name: str, version: str) -> bool:
        now = time.monotonic()
        if now - self.checked_at.get((name, version), -1e18) < self.config["check_every_s"]:
            return False
        self.checked_at[(name, version)] = now
        return True

    def consider(self, name: str, version: str, alerts: list[dict[str, Any]]) -> None:
        fired = [a for a in alerts if a["name"] in self.config["on"]]
        if not fired or name not in self.model_dirs:
            return
        folder = Path(self.model_dirs[name])
        with self.lock:
            last = max(self._last_submission(folder) or 0.0, self.last.get(name, 0.0))
            if time.time() - last < self.config["min_interval_hours"] * 3600:
                return
            self.last[name] = time.time()
            entry = {"time": time.time(), "model": name, "version": version, "alert": fired[0]["name"],
                     "message": fired[0]["message"], "job": None}
            self._write_marker(folder, entry)  # before submitting: a failure must not make it retry at once
        threading.Thread(target=self._submit, args=(folder, entry), daemon=True).start()

    def _submit(self, folder: Path, entry: dict[str, Any]) -> None:
        # The header, not use_token_auth(): that changes this live replica's environment and
        # Ray's config. The script by its path in this installation (the job's working folder
        # is the head's, which need not be the project's).
        from stocktrend.cluster.auth import auth_headers

        script = Path(__file__).resolve().parents[3] / "ray_jobs" / "retrain.py"
        entrypoint = shlex.join(["python", str(script), "--model", str(folder), *self.config["args"]])
        try:
            from ray.job_submission import JobSubmissionClient

            dashboard = self.config.get("dashboard") or os.environ.get("RAY_DASHBOARD_ADDRESS") or own_dashboard()
            entry["job"] = JobSubmissionClient(dashboard, headers=auth_headers()).submit_job(
                entrypoint=entrypoint, metadata={"stocktrend": "retrain-on-alert", "alert": entry["alert"]})
            log.warning("alert %s on %s/%s: submitted %s as job %s", entry["alert"], entry["model"], entry["version"],
                        entrypoint, entry["job"])
        except Exception as err:  # serving must go on whatever the job API says
            entry["error"] = f"{type(err).__name__}: {err}"
            log.error("alert %s on %s: could not submit the retrain job: %s", entry["alert"], entry["model"], err)
        with self.lock:
            self._write_marker(folder, entry)

    @staticmethod
    def _last_submission(folder: Path) -> float | None:
        try:
            return float(json.loads((folder / MARKER).read_text())["time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def _write_marker(folder: Path, entry: dict[str, Any]) -> None:
        from stocktrend.data.store import atomic_write_text

        try:
            atomic_write_text(folder / MARKER, json.dumps(entry) + "\n")
        except OSError as err:  # a read-only model folder: the in-memory record still rate-limits this monitor
            log.error("cannot record the retrain submission in %s: %s", folder, err)


def own_dashboard() -> str:
    """The dashboard of the cluster this process is a worker of, looked up through its GCS
    (not "the head on this machine": another cluster may run beside it)."""
    import ray
    from ray.dashboard.utils import get_address_for_submission_client

    return get_address_for_submission_client(ray.get_runtime_context().gcs_address).rstrip("/")
