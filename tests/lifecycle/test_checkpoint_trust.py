"""What a lab sharing one tracking server may not do to the others: make `wsol evaluate` run
code (a pickled checkpoint), swap a promoted checkpoint, read test uncounted, or get files of
the report folder uploaded. Real MLflow on SQLite, a real trial's checkpoint, no Ray."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient

import wsol.lifecycle.evaluate
from wsol.cli import main
from wsol.common import tracking_schema as schema
from wsol.lifecycle.evaluate import evaluate_model
from wsol.lifecycle.promote import promote
from wsol.lifecycle.report import build_report, latex_escape, write_latex
from wsol.trial.config import TrialConfig
from wsol.trial.runner import run_trial


@pytest.fixture(scope="module")
def best_pt(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best.pt of one epoch of CAM on the tiny synthetic benchmark."""
    out = tmp_path_factory.mktemp("trial")
    run_trial(TrialConfig(data_root=str(tiny_synth), epochs=1, resize=36, crop=32, eval_size=32,
                          batch_size=8, ivr_percentiles=[30.0]), out, log=lambda line: None)
    return out / "best.pt"


def trial_run(client: MlflowClient, checkpoint: Path, choices_of: Path | None = None) -> str:
    """A finished trial run whose checkpoint/best.pt is `checkpoint`, tagged with the choices
    stored in `choices_of` (default: the checkpoint itself)."""
    experiment = client.get_experiment_by_name("searches").experiment_id
    metrics = torch.load(choices_of or checkpoint, weights_only=True)["metrics"]
    tags = {schema.KIND: schema.TRIAL, schema.METHOD: "cam", schema.BACKBONE: "tiny",
            schema.DATASET: "synthetic", schema.SELECTED_ON: "train-fullsup",
            **{schema.selected(k): str(metrics[k]) for k in schema.CHOICES}}
    run_id = client.create_run(experiment, tags=tags).info.run_id
    client.log_metric(run_id, schema.SCORE, float(metrics["score"]))
    client.log_artifact(run_id, str(checkpoint), schema.CHECKPOINT_FOLDER)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def copy_to(tmp_path: Path, folder: str, state: dict[str, Any]) -> Path:
    path = tmp_path / folder / "best.pt"
    path.parent.mkdir()
    torch.save(state, path)
    return path


def test_evaluate_refuses_a_checkpoint_that_runs_code(client, best_pt, tmp_path):
    marker = tmp_path / "the-checkpoint-ran-code"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    state = torch.load(best_pt, weights_only=True)
    evil = copy_to(tmp_path, "evil", {**state, "metrics": {**state["metrics"],
                                                           "note": Payload()}})
    run_id = trial_run(client, evil, choices_of=best_pt)
    with pytest.raises(ValueError, match=rf"checkpoint/best\.pt of run {run_id} holds more than "
                                         r"tensors and plain values \(it names exec\); "
                                         "refusing to load it"):
        evaluate_model(client, run_id, device="cpu")
    assert not marker.exists()
    assert client.get_run(run_id).data.tags.get(schema.TEST_EVALUATIONS) is None


def test_promote_records_the_checkpoint_hash_and_evaluate_refuses_another(client, best_pt,
                                                                          tmp_path):
    run_id = trial_run(client, best_pt)
    promotion = promote(client, run_id=run_id)
    version = client.get_model_version(promotion.name, promotion.version)
    digest = hashlib.sha256(best_pt.read_bytes()).hexdigest()
    assert version.tags[schema.CHECKPOINT_SHA256] == promotion.checkpoint_sha256 == digest
    state = torch.load(best_pt, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1  # loads fine, but is not what was promoted
    client.log_artifact(run_id, str(copy_to(tmp_path, "swapped", state)),
                        schema.CHECKPOINT_FOLDER)
    with pytest.raises(ValueError, match=f"checkpoint of version {promotion.version} of "
                                         f"{promotion.name} changed since it was promoted"):
        evaluate_model(client, promotion.model_uri, device="cpu")
    assert counts(client, run_id, promotion.name, promotion.version) == ("", "0")


def counts(client: MlflowClient, run_id: str, name: str, version: str) -> tuple[str, str]:
    return (client.get_run(run_id).data.tags.get(schema.TEST_EVALUATIONS, ""),
            client.get_model_version(name, version).tags[schema.TEST_EVALUATIONS])


def test_evaluate_by_run_id_is_counted_on_the_run_and_its_version(client, best_pt):
    run_id = trial_run(client, best_pt)
    promotion = promote(client, run_id=run_id)
    by_model = evaluate_model(client, promotion.model_uri, device="cpu")
    assert counts(client, run_id, promotion.name, promotion.version) == ("1", "1")
    by_run = evaluate_model(client, run_id, device="cpu")
    assert counts(client, run_id, promotion.name, promotion.version) == ("2", "2")
    assert (by_model["evaluation_number"], by_run["evaluation_number"]) == (1, 2)
    assert by_run["MaxBoxAccV2"] == by_model["MaxBoxAccV2"]


def test_a_crash_while_test_is_read_still_counts_the_reading(client, best_pt, monkeypatch):
    run_id = trial_run(client, best_pt)
    promotion = promote(client, run_id=run_id)
    seen: list[tuple[str, str]] = []

    def crash_in_test(*args: Any, **kwargs: Any) -> None:
        seen.append(counts(client, run_id, promotion.name, promotion.version))
        raise RuntimeError("node lost while reading test")

    monkeypatch.setattr(wsol.lifecycle.evaluate, "evaluate_checkpoint", crash_in_test)
    with pytest.raises(RuntimeError, match="node lost"):
        evaluate_model(client, promotion.model_uri, device="cpu")
    assert seen == [("1", "1")]  # counted before test was opened
    assert counts(client, run_id, promotion.name, promotion.version) == ("1", "1")
    (evaluation,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`{schema.KIND}` = 'evaluation'")
    assert evaluation.info.status == "FAILED"


def test_report_logs_only_its_files_and_both_commands_say_their_scope(client, best_pt,
                                                                      tmp_path, capsys):
    trial_run(client, best_pt)
    uri = client.tracking_uri
    out = tmp_path / "here"
    (out / ".venv").mkdir(parents=True)
    (out / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (out / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-upload\n")
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 0
    (report_run,) = client.search_runs(
        [client.get_experiment_by_name(schema.REPORT_EXPERIMENT).experiment_id])
    logged = sorted(a.path for a in client.list_artifacts(report_run.info.run_id))
    assert "report.tex" in logged
    assert not [name for name in logged if name.startswith(".")]
    assert sorted(p.name for p in out.iterdir()) == sorted([".env", ".venv", *logged])
    assert f"candidates from every experiment on {uri}: name --experiment or --search" in \
        capsys.readouterr().err
    assert build_report(client, out, ["searches"], log=False)["files"] == logged
    assert main(["report", "--tracking-uri", uri, "--out", str(out), "--no-log",
                 "--experiment", "searches"]) == 0
    assert "candidates from" not in capsys.readouterr().err

    assert main(["promote", "--tracking-uri", uri, "--method", "cam", "--backbone", "tiny"]) == 0
    assert "candidates from every experiment on" in capsys.readouterr().err
    assert main(["promote", "--tracking-uri", uri, "--method", "cam", "--backbone", "tiny",
                 "--experiment", "searches"]) == 0
    assert "candidates from" not in capsys.readouterr().err


def test_latex_cells_cannot_start_a_control_sequence(tmp_path):
    cells = [r"^^5cinput{/etc/passwd}", r"\input{x}", "^^M^^5c^^", "a~b$c$", "50 ± 2 & 10%_#"]
    write_latex(["method", "note"], [["cam", c] for c in cells], tmp_path / "t.tex")
    body = (tmp_path / "t.tex").read_text().split(r"\midrule")[1].split(r"\bottomrule")[0]
    safe = r"\\(textbackslash|textasciicircum|textasciitilde)\{\}|\\[{}$&%_#]|\$\\pm\$|\\\\"
    assert "^" not in body
    assert "\\" not in re.sub(safe, "", body)
    assert latex_escape("^^5c") == r"\textasciicircum{}\textasciicircum{}5c"
    assert latex_escape("{x}") == r"\{x\}"
