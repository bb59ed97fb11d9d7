"""Where the MLflow store is, how its pages are linked, and the experiments in it: shared by
the search (its parent and trial runs) and the lifecycle commands (promote, evaluate,
report, compare)."""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from wsol.common import tracking_schema as schema
from wsol.common.typed_config import ConfigError
from wsol.common.uri_secrets import masked_uri, uri_kind

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns/artifacts"
# MLflow 3.17's UI picks the view from one global GenAI / Model training switch (browser
# storage, GenAI by default) rather than from the tag; this query opens the model view.
UI_QUERY = "workflowType=machine_learning"


def tracking_uri(given: str | None = None) -> str:
    """The flag or config value, else $MLFLOW_TRACKING_URI, else the local SQLite store;
    refused (CredentialsInURI) when it holds credentials."""
    if given:
        return refuse_credentials(given, "tracking URI")
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return refuse_credentials(from_env, "$MLFLOW_TRACKING_URI")
    return DEFAULT_TRACKING_URI


class CredentialsInURI(ConfigError):
    """A tracking URI or storage path with a password, key or token in it. A URI is logged,
    printed and pickled with a search (params, experiment.json, summaries, the console,
    Ray's tuner.pkl on shared storage), so a secret in it would reach all of them; each
    store takes its credentials from a place of its own instead."""


# Where each kind of store takes its credentials instead (what the refusal says).
_CREDENTIALS_GO = {
    "mlflow": "give MLflow them in $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD "
              "(or $MLFLOW_TRACKING_TOKEN)",
    "cloud": "S3 takes them from the AWS credential chain ($AWS_ACCESS_KEY_ID and "
             "$AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, or the machine's instance profile)",
    "database": "the database reads its password from its own file (PostgreSQL: ~/.pgpass "
                "or $PGPASSFILE; MySQL: an option file)",
}
def refuse_credentials(uri: str, what: str) -> str:
    """`uri` itself, or a one-line CredentialsInURI (the URI shown masked) saying where the
    credentials go instead."""
    masked = masked_uri(uri)
    if masked is None:
        return uri
    raise CredentialsInURI(f"{what} {masked} holds credentials, which the search would log "
                           f"and save: leave them out of it; {_CREDENTIALS_GO[uri_kind(uri)]}")


def ui_link(experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's own relative link (append it to the server's address) to one run, or
    to the runs table with the trials flat and best first (sorted by anything but start time,
    the table stops folding trials under their search's run), in the model-training view."""
    if run_id:
        return f"#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"
    order = urllib.parse.quote(f"metrics.`{schema.SCORE}`", safe=".")
    return f"#/experiments/{experiment_id}/runs?{UI_QUERY}&orderByKey={order}&orderByAsc=false"


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The tracking server's page, or `mlflow ui`'s default address for a local store; no
    credentials (a user:password@ in the URI is left out)."""
    base = "http://127.0.0.1:5000"
    if tracking_uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(tracking_uri)
        host = parts.netloc.rsplit("@", 1)[-1]
        base = f"{parts.scheme}://{host}{parts.path.rstrip('/')}"
    return f"{base}/{ui_link(experiment_id, run_id)}"


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, created if missing; tagged as model training either way, so
    experiments made by older versions get the tag too."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if tracking_uri.startswith("sqlite:"):
            location = (Path(DEFAULT_ARTIFACT_ROOT).resolve()).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={schema.EXPERIMENT_KIND: schema.MODEL_TRAINING})
        except MlflowException as error:  # another search made it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise error from None
    if found.tags.get(schema.EXPERIMENT_KIND) != schema.MODEL_TRAINING:
        client.set_experiment_tag(found.experiment_id, schema.EXPERIMENT_KIND,
                                  schema.MODEL_TRAINING)
    return found.experiment_id


def open_store(tracking_uri: str, wait_s: float = 60) -> MlflowClient:
    """A client of the store. MLflow builds a new SQLite file's tables on first use; a second
    search starting at that moment fails inside the build (an alembic error) and waits for
    the first one's instead."""
    deadline = time.time() + wait_s
    while True:
        try:
            return MlflowClient(tracking_uri)
        except Exception:
            if not tracking_uri.startswith("sqlite:") or time.time() > deadline:
                raise
            time.sleep(1)


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params (`a.b: value`, at most 500 characters each)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out
