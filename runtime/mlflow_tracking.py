"""MLflow tracking (`tracking.backends=jsonl,...,mlflow`): every run is an MLflow run, every
study a parent run with a child per arm and seed.

Where: `tracking.mlflow_uri`, else $MLFLOW_TRACKING_URI, else a SQLite file in the directory
tracked: `<run>/mlflow.db` for a lone run, `<study>/mlflow.db` for a study, whose runs all log
there (the study hands its store and parent run to them in the environment). A run's files then
stay in its directory, and one `mlflow ui --backend-store-uri sqlite:///<study>/mlflow.db` shows a
whole study. A SQLite store keeps its artifacts in `mlflow-artifacts/` beside it.

What: params = the flattened config; metrics = every row of metrics.jsonl, at its step; tags =
the commit, the dirty flag, the datasets' versions and content hashes, the attempts; artifacts =
the model card and eval/ (sent when written). A study's parent run: its launch as params, the
report, summary and plots as artifacts, the verdict as a tag.

Resume: the MLflow run's id and store are kept in `mlflow_run.json` in the directory tracked,
and a resumed run (a rerun study) continues that MLflow run in that store, never a second one
(a copied directory too: its record names the original's store).
MLflow keeps every point logged: a run killed (SIGKILL, a lost node) after logging steps past
its last checkpoint logs those steps again when resumed, so they have two points each, the later
one being the one metrics.jsonl keeps. SIGTERM checkpoints the step last logged: no repeats.

`mlflow` is imported here only, and only by runs that log to it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from analysis.runs import CONFIG_FILE, EVAL_DIR, MANIFEST_FILE, MODEL_CARD_FILE, read_json
from atomic_write import write_json_atomically
from runtime.config import flatten
from runtime.errors import UsageError

STORE_FILE = "mlflow.db"  # the default store, in the directory tracked
ARTIFACTS_DIR = "mlflow-artifacts"  # a SQLite store's artifacts, beside it
RUN_FILE = "mlflow_run.json"  # {"tracking_uri", "experiment_id", "run_id"}
URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_ENV = "ARCHLAB_MLFLOW_PARENT_RUN_ID"  # set by launch.study for the runs it launches
SQLITE = "sqlite:///"
# A run's status -> its MLflow run's.
STATUSES = {
    "completed": "FINISHED",
    "preempted": "KILLED",
    "diverged": "FAILED",
    "failed": "FAILED",
}
# Files sent as artifacts: (name in the directory tracked, artifact path; None: the root).
RUN_ARTIFACTS = ((MODEL_CARD_FILE, None), (EVAL_DIR, EVAL_DIR))
STUDY_ARTIFACTS = (
    ("report.md", None),
    ("report.html", None),
    ("summary.json", None),
    ("plots", "plots"),
)


# ------------------------------------------------------------------------------------- store
def check(tracking: ml_collections.ConfigDict) -> None:
    """The package is there and the store is one MLflow opens, from any directory."""
    if importlib.util.find_spec("mlflow") is None:
        raise UsageError(
            "tracking.backends names mlflow but the mlflow package is not installed "
            "(pip install -e . installs it)"
        )
    _check_uri(tracking.mlflow_uri, "tracking.mlflow_uri", relative_ok=False)
    _check_uri(os.environ.get(URI_ENV, ""), URI_ENV, relative_ok=True)


def _check_uri(uri: str, where: str, relative_ok: bool) -> None:
    """MLflow refuses file stores (from 3.13); a relative SQLite path in the config would mean
    another file for a study's runs, which start in the repository, than for the study."""
    if not uri or uri.split("://")[0] in ("databricks", "databricks-uc"):
        return
    if "://" not in uri or uri.startswith("file:"):
        raise UsageError(
            f"{where}={uri!r} is a file store, which MLflow no longer opens; give a SQLite file "
            "(sqlite:////absolute/path/mlflow.db) or a tracking server (http://host:5000)"
        )
    path = uri.removeprefix(SQLITE) if uri.startswith(SQLITE) else None
    if path is not None and not os.path.isabs(path) and not relative_ok:
        raise UsageError(
            f"{where}={uri!r} is a relative path; give an absolute one "
            "(sqlite:////absolute/path/mlflow.db: four slashes)"
        )


def store_uri(configured: str, directory: str) -> str:
    """`configured` (tracking.mlflow_uri), else $MLFLOW_TRACKING_URI (a relative SQLite path
    taken from the current directory, as MLflow does), else `<directory>/mlflow.db`."""
    uri = configured or os.environ.get(URI_ENV, "")
    if not uri:
        return SQLITE + os.path.abspath(os.path.join(directory, STORE_FILE))
    if uri.startswith(SQLITE):
        return SQLITE + os.path.abspath(uri.removeprefix(SQLITE))
    return uri


def _artifact_location(uri: str) -> str | None:
    """Beside a SQLite store (MLflow's default is ./mlruns in whatever directory a run starts
    in); a server or database store keeps its own default."""
    if not uri.startswith(SQLITE):
        return None
    return os.path.join(os.path.dirname(uri.removeprefix(SQLITE)), ARTIFACTS_DIR)


def client(uri: str) -> Any:
    """An MlflowClient on `uri`. MLflow's usage telemetry (network calls at import) is off
    unless the user has set MLFLOW_DISABLE_TELEMETRY themselves: archlab runs make none."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(mlflow_client: Any, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=_artifact_location(uri))
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id  # another run logging to this store created it meanwhile


# --------------------------------------------------------------------------------- one record
class Tracked:
    """The MLflow run that records `directory` (a run's or a study's): the one named in its
    mlflow_run.json, continued, else a new one in `experiment` (a child of `parent_run_id`'s
    experiment when given), recorded there."""

    def __init__(
        self,
        directory: str,
        configured_uri: str,
        experiment: str,
        run_name: str,
        parent_run_id: str | None = None,
    ):
        record = read_json(os.path.join(directory, RUN_FILE))
        self.created = record is None
        if record is None:
            self.uri = store_uri(configured_uri, directory)
            self.client = client(self.uri)
            if parent_run_id:
                experiment_id = self.client.get_run(parent_run_id).info.experiment_id
            else:
                experiment_id = _experiment_id(self.client, experiment, self.uri)
            tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            run = self.client.create_run(experiment_id, tags=tags, run_name=run_name)
            self.run_id = run.info.run_id
            write_json_atomically(
                os.path.join(directory, RUN_FILE),
                {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": self.run_id},
                indent=2,
            )
        else:
            self.uri, self.run_id = record["tracking_uri"], record["run_id"]
            self.client = self._existing(directory)
            self.client.update_run(self.run_id, status="RUNNING")
            if (resolved := store_uri(configured_uri, directory)) != self.uri:
                print(
                    f"mlflow: continuing run {self.run_id} in {self.uri}, where it started "
                    f"(not {resolved})",
                    flush=True,
                )
        print(
            f"mlflow: {'new' if self.created else 'resumed'} run {self.run_id} in {self.uri}",
            flush=True,
        )

    def _existing(self, directory: str) -> Any:
        from mlflow.exceptions import MlflowException

        mlflow_client = client(self.uri)
        try:
            mlflow_client.get_run(self.run_id)
        except MlflowException as e:
            raise UsageError(
                f"{os.path.join(directory, RUN_FILE)} names MLflow run {self.run_id} in "
                f"{self.uri}, which does not have it ({' '.join(str(e).split())[:200]})"
            ) from e
        return mlflow_client

    def log(
        self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> None:
        """Params (once: MLflow refuses to change one) and tags, None values left out."""
        from mlflow.entities import Param, RunTag

        self.client.log_batch(
            self.run_id,
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None],
        )

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


# ------------------------------------------------------------------------------------ a run
def provenance_tags(workdir: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The code, data and attempts of the run as its manifest records them."""
    git = manifest.get("git", {})
    attempts = manifest.get("attempts", [])
    resumed = attempts[-1]["resumed_from_step"] if attempts else None
    tags = {
        "mlflow.source.git.commit": git.get("commit"),  # what MLflow's UI shows as the commit
        "archlab.dirty": git.get("dirty"),
        "archlab.diff_sha256": git.get("diff_sha256"),
        "archlab.workdir": os.path.abspath(workdir),
        "archlab.attempts": len(attempts),
        # The latest attempt's ('none': it started afresh): steps past it that a killed attempt
        # logged but never checkpointed have two points.
        "archlab.resumed_from_step": "none" if resumed is None else resumed,
    }
    for name, fingerprint in manifest.get("datasets", {}).items():
        for key in ("version", "content_hash"):
            tags[f"archlab.dataset.{name}.{key}"] = fingerprint.get(key)
    return tags


class RunWriter:
    """A run's metrics to its MLflow run; the config as params and the manifest's provenance as
    tags (read from the run directory: config.json and manifest.json are written first). A run
    launched by a study ($ARCHLAB_MLFLOW_PARENT_RUN_ID) is a child of the study's run, named
    `<arm>/seed_<s>` after its directory."""

    def __init__(self, workdir: str, resume_step: int, experiment: str):
        config = read_json(os.path.join(workdir, CONFIG_FILE))
        parent = os.environ.get(PARENT_ENV) or None
        path = os.path.abspath(workdir)
        name = os.path.basename(path)
        if parent:
            name = f"{os.path.basename(os.path.dirname(path))}/{name}"
        self._run = Tracked(workdir, config["tracking"]["mlflow_uri"], experiment, name, parent)
        params = flatten(config) if self._run.created else {}
        manifest = read_json(os.path.join(workdir, MANIFEST_FILE)) or {}
        self._run.log(params, provenance_tags(workdir, manifest))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in scalars.items()]
        self._run.client.log_batch(self._run.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self._run.end(STATUSES[status])


def publish_run_outputs(workdir: str) -> None:
    """The model card and eval/ (results and plots) to the run's MLflow run, if it has one."""
    record = read_json(os.path.join(workdir, RUN_FILE))
    if record is None:
        return
    log_files(client(record["tracking_uri"]), record["run_id"], workdir, RUN_ARTIFACTS)


def log_files(
    mlflow_client: Any, run_id: str, directory: str, files: tuple[tuple[str, str | None], ...]
) -> None:
    """Each of `files` (name in `directory`, artifact path) that exists, a file or a folder."""
    for name, artifact_path in files:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            mlflow_client.log_artifacts(run_id, path, artifact_path)
        elif os.path.isfile(path):
            mlflow_client.log_artifact(run_id, path, artifact_path)


# ---------------------------------------------------------------------------------- a study
class StudyRun:
    """A study's parent run: its runs log as children of it, in its store."""

    def __init__(self, run: Tracked):
        self._run = run

    @classmethod
    def open(
        cls,
        study_dir: str,
        tracking: ml_collections.ConfigDict,
        study_name: str,
        launch: Mapping[str, Any],
    ) -> StudyRun:
        """`launch`: what launch.study keeps fixed for the study directory (study file, setting,
        overrides), logged as params."""
        name = os.path.basename(os.path.abspath(study_dir))
        run = Tracked(study_dir, tracking.mlflow_uri, study_name, name)
        params = {k: v if isinstance(v, str) else repr(v) for k, v in launch.items()}
        run.log(params if run.created else {}, {"archlab.study_dir": os.path.abspath(study_dir)})
        return cls(run)

    def child_env(self) -> dict[str, str]:
        return {URI_ENV: self._run.uri, PARENT_ENV: self._run.run_id}

    def finish(self, study_dir: str, summary: Mapping[str, Any] | None, status: str) -> None:
        """The report, summary and plots, and the verdict (None: the study was stopped before
        it had one)."""
        if summary is not None:
            log_files(self._run.client, self._run.run_id, study_dir, STUDY_ARTIFACTS)
            claims = {
                f"archlab.claim.{i}": f"{c['verdict']['outcome']}: {c['text']}"
                for i, c in enumerate(summary.get("claims", []))
            }
            self._run.log(
                tags={
                    "archlab.verdict": summary.get("verdict"),
                    "archlab.hypothesis": summary.get("hypothesis"),
                    **claims,
                }
            )
        self._run.end(STATUSES[status])
