"""One trial end to end on the tiny synthetic benchmark (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

import wsol.trial.runner
from wsol.cli import main
from wsol.methods import NonFiniteLossError
from wsol.trial.config import ConfigError, TrialConfig, load_config
from wsol.trial.runner import Evaluation, run_trial

SMALL = {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "lr": 0.02,
         "ivr_percentiles": [30.0, 60.0]}


def config(root: Path, **overrides) -> TrialConfig:
    values = {"data_root": str(root), "epochs": 2, **SMALL, **overrides}
    return TrialConfig(**values)


def quiet(_: str) -> None:
    pass


def test_trial_writes_best_checkpoint_and_metrics(tiny_synth: Path, tmp_path: Path) -> None:
    reports: list[Evaluation] = []
    summary = run_trial(config(tiny_synth), tmp_path, reports.append, quiet)
    assert summary["selected_on"] == "train-fullsup"
    assert [r.epoch for r in reports] == [0, 1]
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    metrics = on_disk["metrics"]
    for key in ("MaxBoxAcc", "MaxBoxAccV2", "BoxAccV2@30", "PxAP", "threshold", "normalisation",
                "gt_known_loc", "top1_loc"):
        assert key in metrics
    assert metrics["score"] == metrics["MaxBoxAccV2"]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == on_disk["selected_epoch"]
    assert best["metrics"]["score"] == max(r.metrics["score"] for r in reports)


def test_same_seed_same_numbers_and_weights(tiny_synth: Path, tmp_path: Path) -> None:
    first = run_trial(config(tiny_synth, method="bgc", params={"warm": 1}), tmp_path / "a",
                      log=quiet)
    second = run_trial(config(tiny_synth, method="bgc", params={"warm": 1}), tmp_path / "b",
                       log=quiet)
    assert [h["loss/ce"] for h in first["history"]] == [h["loss/ce"] for h in second["history"]]
    assert first["metrics"]["candidates"] == second["metrics"]["candidates"]
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_a_crash_gives_the_uninterrupted_result(tiny_synth: Path,
                                                             tmp_path: Path) -> None:
    cfg = config(tiny_synth, epochs=3)
    straight = run_trial(cfg, tmp_path / "straight", log=quiet)

    def crash_after_first(evaluation: Evaluation) -> None:
        if evaluation.epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, tmp_path / "resumed", crash_after_first, quiet)
    lines: list[str] = []
    resumed = run_trial(cfg, tmp_path / "resumed", log=lines.append)
    assert any("resuming after epoch 0" in line for line in lines)
    assert [h["loss/ce"] for h in resumed["history"]] == [h["loss/ce"] for h in straight["history"]]
    timing = {"evaluation_seconds", "evaluation_share"}  # wall clock: never repeats exactly
    assert ({k: v for k, v in resumed["metrics"].items() if k not in timing}
            == {k: v for k, v in straight["metrics"].items() if k not in timing})


def test_resume_refuses_a_checkpoint_that_runs_code(tiny_synth: Path, tmp_path: Path) -> None:
    """last.pt comes back from shared Ray storage: it is loaded as tensors and plain values
    only (both checkpoints are written that way), so a planted object never runs."""
    cfg = config(tiny_synth, epochs=1)
    run_trial(cfg, tmp_path, log=quiet)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    marker = tmp_path / "the-checkpoint-ran-code"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    state["history"].append(Payload())
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt holds more than tensors and plain values "
                                         r"\(it names exec\); refusing to load it"):
        run_trial(cfg, tmp_path, log=quiet)
    assert not marker.exists()


def test_checkpoint_values_are_saved_as_plain_values() -> None:
    state = {"score": np.float64(61.5), "seen": np.arange(3, dtype=np.uint32),
             "kept": (1, "a", None, torch.zeros(2))}
    saved = wsol.trial.runner.plain(state)
    assert saved["score"] == 61.5 and type(saved["score"]) is float
    assert saved["seen"] == [0, 1, 2] and saved["kept"][:3] == (1, "a", None)
    with pytest.raises(TypeError, match=r"checkpoint\['when'\] is a PurePosixPath; a checkpoint "
                                        "holds tensors and plain values only"):
        wsol.trial.runner.plain({"when": PurePosixPath("x")})


def test_resume_refuses_another_config(tiny_synth: Path, tmp_path: Path) -> None:
    run_trial(config(tiny_synth, epochs=1), tmp_path, log=quiet)
    with pytest.raises(ValueError, match="different config"):
        run_trial(config(tiny_synth, epochs=1, lr=0.5), tmp_path, log=quiet)


def test_nan_loss_stops_with_a_clear_error(tiny_synth: Path, tmp_path: Path) -> None:
    cfg = config(tiny_synth, method="bgc", params={"lambda_drop": float("nan")})
    with pytest.raises(NonFiniteLossError, match="non-finite loss in epoch 0"):
        run_trial(cfg, tmp_path, log=quiet)


@pytest.mark.parametrize(
    ("method", "params", "epochs"),
    [
        ("minmaxcam", {"set_size": 2, "classes_per_batch": 2}, 1),
        ("weightmap", {"generator_encoder": "tiny", "classifier_epochs": 1}, 2),
        ("weightmap", {"generator_encoder": "tiny", "classifier_epochs": 1, "variant": "II",
                       "set_size": 2, "classes_per_batch": 2}, 2),
    ],
)
def test_every_method_runs_a_trial(tiny_synth: Path, tmp_path: Path, method: str, params: dict,
                                   epochs: int) -> None:
    summary = run_trial(config(tiny_synth, method=method, params=params, epochs=epochs),
                        tmp_path, log=quiet)
    assert summary["metrics"]["MaxBoxAccV2"] >= 0
    if method == "weightmap":
        assert summary["selected_epoch"] == 1  # the classifier phase is never selected
        assert "label_free_score" in summary["metrics"]


def test_weightmap_label_free_selection(tiny_synth: Path, tmp_path: Path) -> None:
    cfg = config(tiny_synth, method="weightmap", epochs=3, selection="label_free",
                 params={"generator_encoder": "tiny", "classifier_epochs": 1})
    summary = run_trial(cfg, tmp_path, log=quiet)
    evaluated = [h for h in summary["history"] if "label_free_score" in h]
    best = max(evaluated, key=lambda h: h["label_free_score"])
    assert summary["selected_epoch"] == best["epoch"]
    assert summary["selection"] == "label_free"


def test_a_trial_never_opens_the_test_split(tiny_synth: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = wsol.trial.runner.load_split

    def recording(root, name):
        opened.append(name)
        return real(root, name)

    monkeypatch.setattr(wsol.trial.runner, "load_split", recording)
    run_trial(config(tiny_synth, epochs=1), tmp_path, log=quiet)
    assert sorted(opened) == ["train", "val"]


def test_config_file_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "trial.yaml"
    bad.write_text("method: cam\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"trial.yaml: unknown key 'learning_rate'"):
        load_config(bad)
    bad.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match=r"trial.yaml: epochs: 'ten' is not an int"):
        load_config(bad)
    bad.write_text("curve_interval: 0.05\n")
    with pytest.raises(ConfigError, match=r"trial\.yaml: curve_interval: 0.05 is not 0.01"):
        load_config(bad)


def test_cli_train_with_flags_only(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in SMALL.items()))
    out = tmp_path / "run"
    code = main(["train", "--config", str(cfg), "--method", "cam", "--data-root",
                 str(tiny_synth), "--epochs", "1", "--seed", "4", "--out", str(out)])
    assert code == 0
    assert "selected epoch 1 on train-fullsup" in capsys.readouterr().out
    assert torch.load(out / "best.pt", weights_only=True)["config"]["seed"] == 4
    assert main(["train", "--method", "nosuch", "--data-root", str(tiny_synth),
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err


def test_channels_last_changes_the_layout_not_the_training(tiny_synth: Path,
                                                          tmp_path: Path) -> None:
    from wsol.methods import build_method

    method = build_method(config(tiny_synth, channels_last=True), 4, torch.device("cpu"))
    conv = next(m for m in method.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch = method.inputs(torch.rand(2, 3, 32, 32))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    plain = run_trial(config(tiny_synth, epochs=1), tmp_path / "plain", log=quiet)
    nhwc = run_trial(config(tiny_synth, epochs=1, channels_last=True), tmp_path / "nhwc",
                     log=quiet)
    assert nhwc["history"][0]["loss/ce"] == pytest.approx(plain["history"][0]["loss/ce"],
                                                          rel=1e-3)


@pytest.mark.parametrize("method", ["cam", "minmaxcam"])
def test_amp_runs_training_steps_in_reduced_precision(tiny_synth: Path, tmp_path: Path,
                                                      monkeypatch, method: str) -> None:
    from wsol.methods import METHODS

    cls = METHODS.get(method)
    seen: list[bool] = []
    original = cls.train_batch

    def recording(self, images, labels, epoch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, images, labels, epoch)

    monkeypatch.setattr(cls, "train_batch", recording)
    params = {"classes_per_batch": 2, "set_size": 2} if method == "minmaxcam" else {}
    summary = run_trial(config(tiny_synth, method=method, amp=True, params=params),
                        tmp_path, log=quiet)
    assert seen and all(seen)
    assert all(torch.isfinite(torch.tensor(h["loss/ce"])) for h in summary["history"])
    state = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    assert all(v.dtype != torch.bfloat16 for v in state.values())
