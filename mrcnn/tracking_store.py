"""The local MLflow store that every run shares (``outputs/mlflow.db``), created once even when
runs start together.

MLflow 3.18 creates a SQLite store's tables, and migrates them, in the first client that opens
it, with no lock (``SqlAlchemyStore.__init__``). Three jobs of a parallel sweep on a fresh store
did it at once: two died with "OperationalError('(sqlite3.OperationalError) duplicate column
name: step')" and one run was recorded (the same race as hydraflow issue #245). Here each run
opens the store, and makes the experiment, under a lock file beside the database, so the first
creates both and the others find them. The lock is on the store's file system, so jobs on
several machines sharing it (SLURM) take turns as well.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# How long a run waits for another to create the store (seconds: creating one took 3-10 s here).
LOCK_TIMEOUT = 600


def sqlite_path(tracking_uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///FILE`` tracking URI; None for anything else (a
    server, another database, MLflow's default), which handles its own concurrency."""
    prefix = "sqlite:///"
    if not tracking_uri or not str(tracking_uri).startswith(prefix):
        return None
    name = str(tracking_uri)[len(prefix) :].split("?", 1)[0]
    return Path(name) if name and name != ":memory:" else None


def prepare_mlflow_store(
    tracking_uri: str | None, experiment_name: str, artifact_location: str | None = None
) -> None:
    """Create (or upgrade) the SQLite store at ``tracking_uri`` and its experiment
    ``experiment_name`` once, under ``<database>.lock``: what Lightning's ``MLFlowLogger`` does
    on its first use, made safe for runs that start together (see the module doc)."""
    database = sqlite_path(tracking_uri)
    if database is None:
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock", timeout=LOCK_TIMEOUT):
        client = MlflowClient(str(tracking_uri))  # creates or migrates the tables
        if client.get_experiment_by_name(experiment_name) is None:
            log.info("Creating the MLflow experiment %r in %s.", experiment_name, database)
            client.create_experiment(experiment_name, artifact_location=artifact_location)
