"""Every malformed value of the three configuration files and of `--set` is refused with one
line that names the file, the key path and what was given: a ConfigError (exit status 2 on the
command line), never a traceback and never a search that starts and fails later."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.cli import main
from wsol.common.outages import OUTAGE_LIMIT_ENV
from wsol.common.typed_config import ConfigError
from wsol.search.experiment import load_experiment
from wsol.search.space import load_search_space
from wsol.trial.config import load_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

# (YAML text, what the one line must say after the file's name)
EXPERIMENTS = [
    ("trials_per_pair: ten", "trials_per_pair: 'ten' is not an int"),
    ("trials_per_pair: null", "trials_per_pair: None is not an int"),
    ("trials_per_pair: 0", "trials_per_pair: 0 is not >= 1"),
    ("trials_per_pair: 2.5", "trials_per_pair: 2.5 is not an int"),
    ("scheduler: asha", "scheduler: 'asha' is not a mapping"),
    ("scheduler: {type: hyperband}", "scheduler.type: 'hyperband' is not one of asha or fifo"),
    ("scheduler: {type: asha, grace_period: 0}", "scheduler.grace_period: 0 is not >= 1"),
    ("scheduler: {type: asha, reduction_factor: 1}", "scheduler.reduction_factor: 1 is not > 1"),
    ("scheduler: {type: asha, rung: 3}", "scheduler: unknown key 'rung'"),
    ("scheduler: {type: asha, rungs: 3}", "scheduler.rungs: 3 is not one of epochs or fraction"),
    ("trial: [1, 2]", "trial: [1, 2] is not a mapping"),
    ("trial: {epochs: ten}", "trial: epochs: 'ten' is not an int"),
    ("trial: {epoch: 3}", "trial: unknown key 'epoch'"),
    ("trial: {normalisations: [minmax, bogus]}", "trial: normalisations[1]: 'bogus' is not one"),
    ("max_concurrent: -1", "max_concurrent: -1 is not >= 1"),
    ("methods: []", "methods: must not be empty"),
    ("methods: cam", "methods: 'cam' is not a list"),
    ("methods: [cam, gradcam]", "methods[1]: 'gradcam' is not one of bgc, cam"),
    ("methods: [cam, cam]", "methods: ['cam', 'cam'] names one twice"),
    ("backbones: tiny", "backbones: 'tiny' is not a list"),
    ("backbones: [vgg17]", "backbones[0]: 'vgg17' is not one of"),
    ("backbones: [null]", "backbones[0]: None is not a string"),
    ("method_params: {bgc: {tau_fg: high}}", "method_params.bgc.tau_fg: 'high' is not a number"),
    ("method_params: {bgc: {tau: 0.5}}", "method_params.bgc.tau: not a trial setting and not"),
    ("method_params: {cam: 3}", "method_params.cam: 3 is not a mapping"),
    ("method_params: {gradcam: {}}", "method_params.gradcam: not one of the searched methods"),
    ("method_params: {bgc: {epochs: -2}}", "method_params.bgc: epochs: -2 is not >= 1"),
    ("sampler: grid", "sampler: 'grid' is not one of tpe, random, gp, cmaes or qmc"),
    ("sampler: [tpe]", "sampler: ['tpe'] is not one of"),
    ("seed: -1", "seed: -1 is not >= 0"),
    ("seed: '1'", "seed: '1' is not an int"),
    ("name: ''", "name: must not be empty"),
    ("name: 5", "name: 5 is not a string"),
    ("methds: [cam]", "unknown key 'methds'"),
    ("resources_per_trial: {cpu: -1}", "resources_per_trial.cpu: -1 is not >= 0"),
    ("resources_per_trial: 2", "resources_per_trial: 2 is not a mapping"),
    ("time_budget_s: 0", "time_budget_s: 0 is not > 0"),
    ("family: birds", "family: 'birds' is not one of fine_grained or generic"),
    ("dataset: mnist", "family: dataset 'mnist' is not one of"),
    ("param_ranges: {lr: fast}", "param_ranges.lr: 'fast' is not a mapping"),
    ("param_ranges: {lr: {lo: 1}}", "param_ranges.lr: unknown key 'lo'"),
    ("param_ranges: {lr: {low: fast}}", "param_ranges.lr.low: 'fast' is not a number"),
    ("param_ranges: {gradcam.lr: {low: 0.1}}", "param_ranges.gradcam.lr: gradcam is not searched"),
    ("synthetic_preset: huge", "synthetic_preset: 'huge' is not one of tiny, demo, large"),
    ("max_failures: -1", "max_failures: -1 is not >= 0"),
    ("max_failures: many", "max_failures: 'many' is not an int"),
    ("storage_path: null", "storage_path: None is not a string"),
    ("tracking_uri: 5", "tracking_uri: 5 is not a string"),
    # Bounds (issue 25): finite numbers, maxima no real search reaches.
    ("name: ../../x", "name: '../../x' is not 1-100 letters, digits, '.', '_' or '-'"),
    ("name: a/b", "name: 'a/b' is not 1-100 letters"),
    ("name: .hidden", "name: '.hidden' is not 1-100 letters"),
    ("name: " + "x" * 5000, "... (5000 characters) is not 1-100 letters"),
    ("name: " + "x" * 101, "(101 characters) is not 1-100 letters"),
    ('name: "wsol\\ndemo"', "name: 'wsol\\ndemo' is not 1-100 letters"),
    ("name: my search", "name: 'my search' is not 1-100 letters"),
    ("max_concurrent: 100000", "max_concurrent: 100000 is not <= 4096"),
    ("trials_per_pair: 1000000", "trials_per_pair: 1000000 is not <= 100000"),
    ("max_failures: 100000", "max_failures: 100000 is not <= 1000"),
    ("time_budget_s: .inf", "time_budget_s: inf is not a finite number"),
    ("time_budget_s: 1e12", "time_budget_s: 1000000000000.0 is not <= 31536000"),
    ("resources_per_trial: {gpu: 1e9}", "resources_per_trial.gpu: 1000000000.0 is not <= 64"),
    ("resources_per_trial: {cpu: .inf}", "resources_per_trial.cpu: inf is not a finite number"),
    ("resources_per_trial: {cpu: .nan}", "resources_per_trial.cpu: nan is not a finite number"),
    ("resources_per_trial: {cpu: 100000}", "resources_per_trial.cpu: 100000 is not <= 1024"),
    ("resources_per_trial: {memory: 1e20}", "resources_per_trial.memory: 1e+20 is not <= "),
    ("resources_per_trial: {gpus: 1}", "resources_per_trial: unknown key 'gpus'"),
    ("resources_per_trial: {cpu: 1, TPU: 1}", "resources_per_trial: unknown key 'TPU'"),
    ("scheduler: {type: asha, reduction_factor: .inf}",
     "scheduler.reduction_factor: inf is not a finite number"),
    ("scheduler: {type: asha, reduction_factor: 1000}",
     "scheduler.reduction_factor: 1000 is not <= 100"),
    ("scheduler: {type: asha, grace_period: 100000}",
     "scheduler.grace_period: 100000 is not <= 10000"),
    ("param_ranges: {lr: {high: .inf}}", "param_ranges.lr.high: inf is not a finite number"),
    ("param_ranges: {lr: {low: -.inf}}", "param_ranges.lr.low: -inf is not a finite number"),
    ("param_ranges: {lr: {low: .nan}}", "param_ranges.lr.low: nan is not a finite number"),
    ("seed: 4294967295", "seed: 4294967295 is not <= 2147483647"),
    ("trial: {epochs: 1000000000}", "trial: epochs: 1000000000 is not <= 10000"),
    ("trial: {lr: .inf}", "trial: lr: inf is not a finite number"),
    ("trial: {weight_decay: .inf}", "trial: weight_decay: inf is not a finite number"),
    ("trial: {num_workers: 100000}", "trial: num_workers: 100000 is not <= 256"),
    ("trial: {batch_size: 1000000000}", "trial: batch_size: 1000000000 is not <= 65536"),
    ("trial: {resize: 64, crop: 72}", "trial: crop: 72 is not <= resize (64)"),
    ("trial: {device: bogus}", "trial: device: 'bogus' is not auto, cpu, cuda, cuda:N or mps"),
    ("method_params: {cam: {lr: .inf}}", "method_params.cam: lr: inf is not a finite number"),
    # Across keys: ASHA's first rung within the trials' epochs (Ray's assertion otherwise).
    ("trial: {epochs: 1}", "scheduler.grace_period: 2 is more than trial.epochs 1 (ASHA's"),
    ("scheduler: {type: asha, grace_period: 3}\ntrial: {epochs: 2}",
     "scheduler.grace_period: 3 is more than trial.epochs 2"),
    ("scheduler: {type: asha, grace_period: 12}",
     "scheduler.grace_period: 12 is more than the default trial.epochs 10"),
    ("method_params: {cam: {epochs: 1}}",
     "scheduler.grace_period: 2 is more than method_params.cam.epochs 1"),
    ("- a\n- b", "the top level must be a mapping"),
    ("methods: [cam", "not valid YAML: line 3, column 1"),  # after search_spaces
]

TRIALS = [
    ("epochs: ten", "epochs: 'ten' is not an int"),
    ("epochs: 0", "epochs: 0 is not >= 1"),
    ("epochs: null", "epochs: None is not an int"),
    ("epochs: 1.5", "epochs: 1.5 is not an int"),
    ("batch_size: -4", "batch_size: -4 is not >= 1"),
    ("lr: 0", "lr: 0 is not > 0"),
    ("lr: fast", "lr: 'fast' is not a number"),
    ("lr: [0.1]", "lr: [0.1] is not a number"),
    ("momentum: 1.5", "momentum: 1.5 is not < 1"),
    ("weight_decay: -1", "weight_decay: -1 is not >= 0"),
    ("lr_milestones: 3", "lr_milestones: 3 is not a list"),
    ("lr_milestones: [a]", "lr_milestones[0]: 'a' is not an int"),
    ("lr_milestones: [0]", "lr_milestones[0]: 0 is not >= 1"),
    ("normalisations: minmax", "normalisations: 'minmax' is not a list"),
    ("normalisations: []", "normalisations: must not be empty"),
    ("normalisations: [bogus]", "normalisations[0]: 'bogus' is not one of minmax, max, pas"),
    ("ivr_percentiles: [150]", "ivr_percentiles[0]: 150 is not <= 100"),
    ("ivr_percentiles: []", "ivr_percentiles: must not be empty"),
    ("pas_percentile: -5", "pas_percentile: -5 is not >= 0"),
    ("curve_interval: 0.05", "curve_interval: 0.05 is not 0.01 or 0.001"),
    ("selection_metric: top1", "selection_metric: 'top1' is not one of auto, MaxBoxAccV2"),
    ("selection: test", "selection: 'test' is not one of train_fullsup or label_free"),
    ("amp: maybe", "amp: 'maybe' is not a bool"),
    ("amp: 1", "amp: 1 is not a bool"),
    ("channels_last: null", "channels_last: None is not a bool"),
    ("seed: -1", "seed: -1 is not >= 0"),
    ("num_workers: -2", "num_workers: -2 is not >= 0"),
    ("params: [1]", "params: [1] is not a mapping"),
    ("weights: 5", "weights: 5 is not a string"),
    ("data_root: [a]", "data_root: ['a'] is not a string"),
    ("learning_rate: 0.1", "unknown key 'learning_rate'"),
    ("large_feature_map: 'yes'", "large_feature_map: 'yes' is not a bool"),
    ("eval_every: 0", "eval_every: 0 is not >= 1"),
    ("resize: 2.5", "resize: 2.5 is not an int"),
    ("crop: '224'", "crop: '224' is not an int"),
    # Bounds (issue 25): finite numbers, maxima no real run reaches.
    ("epochs: 1000000000", "epochs: 1000000000 is not <= 10000"),
    ("batch_size: 1000000000", "batch_size: 1000000000 is not <= 65536"),
    ("num_workers: 100000", "num_workers: 100000 is not <= 256"),
    ("lr: .inf", "lr: inf is not a finite number"),
    ("lr: .nan", "lr: nan is not a finite number"),
    ("lr: 1000", "lr: 1000 is not <= 100"),
    ("weight_decay: .inf", "weight_decay: inf is not a finite number"),
    ("weight_decay: 5", "weight_decay: 5 is not <= 1"),
    ("lr_classifier_ratio: .inf", "lr_classifier_ratio: inf is not a finite number"),
    ("momentum: .nan", "momentum: nan is not a finite number"),
    ("pas_percentile: .nan", "pas_percentile: nan is not a finite number"),
    ("ivr_percentiles: [.nan]", "ivr_percentiles[0]: nan is not a finite number"),
    ("resize: 100000", "resize: 100000 is not <= 4096"),
    ("eval_size: 100000", "eval_size: 100000 is not <= 4096"),
    ("eval_every: 100000", "eval_every: 100000 is not <= 10000"),
    ("lr_milestones: [100000]", "lr_milestones[0]: 100000 is not <= 10000"),
    ("crop: 300", "crop: 300 is not <= resize (256)"),
    ("resize: 200\ncrop: 224", "crop: 224 is not <= resize (200)"),
    ("seed: 4294967295", "seed: 4294967295 is not <= 2147483647"),
    ("device: bogus", "device: 'bogus' is not auto, cpu, cuda, cuda:N or mps"),
    ("device: 'cuda:x'", "device: 'cuda:x' is not auto, cpu, cuda, cuda:N or mps"),
    ("device: 'cpu '", "device: 'cpu ' is not auto"),
    ("- epochs", "the top level must be a mapping"),
    ("epochs: [1", "not valid YAML: line 2, column 1"),
]

SPACE_FILES = [
    ("- a", "the top level must be a mapping"),
    ("method: cam\nparamz: {}", "unknown key 'paramz'"),
    ("method: nosuch", "method: unknown method 'nosuch'"),
    ("method: 3", "method: 3 is not a string"),
    ("method: cam\nparams: []", "params: [] is not a mapping"),
    ("method: cam\nparams: {lr: 3}", "params.lr: 3 is not a mapping"),
    ("method: cam\nparams: {lr: {type: normal, low: 0, high: 1}}",
     "params.lr.type: 'normal' is not one of float, int or categorical"),
    ("method: cam\nparams: {lr: {low: 0.1, high: 1}}", "params.lr.type: missing"),
    ("method: cam\nparams: {lr: {type: float, low: fast, high: 1}}",
     "params.lr.low: 'fast' is not a number"),
    ("method: cam\nparams: {lr: {type: float, low: 1, high: 0.1}}",
     "params.lr: low 1 must be below high 0.1"),
    ("method: cam\nparams: {lr: {type: float, low: 0, high: 1, log: true}}",
     "params.lr: a log range needs low > 0"),
    ("method: cam\nparams: {epochs: {type: int, low: 1, high: 2.5}}",
     "params.epochs: an int range needs integer bounds"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1}}", "params.lr: needs numeric low and"),
    ("method: cam\nparams: {lr: {type: categorical}}", "params.lr: categorical needs"),
    ("method: cam\nparams: {lr: {type: categorical, choices: []}}",
     "params.lr.choices: must not be empty"),
    ("method: cam\nparams: {lr: {type: categorical, choices: a}}",
     "params.lr.choices: 'a' is not a list"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: 1, log: maybe}}",
     "params.lr.log: 'maybe' is not a bool"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: 1, step: 2}}",
     "params.lr: unknown key 'step'"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: 1, when: 3}}",
     "params.lr.when: 3 is not a mapping"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: 1, when: {x: y}}}",
     "params.lr.when: x = 'y' is not a choice"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: 1, source: 5}}",
     "params.lr.source: 5 is not a string"),
    ("method: cam\nparams: {lrr: {type: float, low: 0.1, high: 1}}",
     "params.lrr: not a trial setting and not a hyperparameter of cam"),
    ("method: cam\nfixed: [1]", "fixed: [1] is not a mapping"),
    ("method: cam\nfixed: {epochz: 3}", "fixed.epochz: not a trial setting"),
    ("method: bgc\nconstraints: tau_bg < tau_fg", "constraints: 'tau_bg < tau_fg' is not a list"),
    ("method: bgc\nconstraints: [tau_bg > tau_fg]", "constraints: 'tau_bg > tau_fg': expected"),
    ("method: bgc\nconstraints: [3]", "constraints[0]: 3 is not a string"),
    ("method: bgc\ndefaults: {a: 1}", "defaults: {'a': 1} is not a list"),
    ("method: bgc\ndefaults: [{values: {tau_fg: 0.5}}]", "defaults[0].source: every row names"),
    ("method: bgc\ndefaults: [{when: {family: birds}, values: {}, source: x}]",
     "defaults[0].when.family: 'birds' is not a condition"),
    ("method: bgc\ndefaults: [{values: {tau_fgg: 0.5}, source: x}]",
     "defaults[0].values.tau_fgg: not a trial setting"),
    ("method: bgc\ndefaults: [{source: x}]", "defaults[0].values: missing"),
    ("method: bgc\ndefaults: [3]", "defaults[0]: 3 is not a mapping"),
    ("method: bgc\ndefaults: [{values: {}, source: x, table: 2}]",
     "defaults[0]: unknown key 'table'"),
    ("method: cam\nparams: {lr: {type: float, low: 0.1, high: .inf}}",
     "params.lr.high: inf is not a finite number"),
    ("method: cam\nparams: {lr: {type: float, low: -.inf, high: 1}}",
     "params.lr.low: -inf is not a finite number"),
    ("method: cam\nparams: {epochs: {type: int, low: 1, high: .inf}}",
     "params.epochs.high: inf is not a finite number"),
    ("method: cam\nextends: missing.yaml", "extends: "),
    ("method: cam\nextends: 3", "extends: 3 is not a string"),
    ("method: cam\nparams: {lr: {type: float", "not valid YAML"),
]

# (--set arguments, the key the line starts with, what it says)
OVERRIDES = [
    (["epochs=ten"], "epochs", "'ten' is not an int"),
    (["epochs=0"], "epochs", "0 is not >= 1"),
    (["epochs=null"], "epochs", "None is not an int"),
    (["epochs=1.5"], "epochs", "1.5 is not an int"),
    (["batch_size=-1"], "batch_size", "-1 is not >= 1"),
    (["lr=0"], "lr", "0 is not > 0"),
    (["lr=fast"], "lr", "'fast' is not a number"),
    (["lr=[0.1]"], "lr", "[0.1] is not a number"),
    (["momentum=2"], "momentum", "2 is not < 1"),
    (["weight_decay=-1"], "weight_decay", "-1 is not >= 0"),
    (["lr_milestones=3"], "lr_milestones", "a list is written lr_milestones=[3]"),
    (["lr_milestones=[a]"], "lr_milestones", "lr_milestones[0]: 'a' is not an int"),
    (["normalisations=[]"], "normalisations", "must not be empty"),
    (["normalisations=[bogus]"], "normalisations", "'bogus' is not one of minmax"),
    (["ivr_percentiles=[150]"], "ivr_percentiles", "150 is not <= 100"),
    (["pas_percentile=-1"], "pas_percentile", "-1 is not >= 0"),
    (["curve_interval=0.05"], "curve_interval", "0.05 is not 0.01 or 0.001"),
    (["selection_metric=top1"], "selection_metric", "'top1' is not one of"),
    (["selection=test"], "selection", "'test' is not one of train_fullsup or label_free"),
    (["amp=maybe"], "amp", "'maybe' is not a bool"),
    (["channels_last=null"], "channels_last", "None is not a bool"),
    (["seed=-1"], "seed", "-1 is not >= 0"),
    (["num_workers=-1"], "num_workers", "-1 is not >= 0"),
    (["weights=5"], "weights", "5 is not a string"),
    (["data_root=[a]"], "data_root", "['a'] is not a string"),
    (["eval_every=0"], "eval_every", "0 is not >= 1"),
    (["resize=2.5"], "resize", "2.5 is not an int"),
    (["crop='224'"], "crop", "'224' is not an int"),
    (["lr=.inf"], "lr", "inf is not a finite number"),
    (["epochs=1000000000"], "epochs", "1000000000 is not <= 10000"),
    (["batch_size=1000000000"], "batch_size", "1000000000 is not <= 65536"),
    (["num_workers=100000"], "num_workers", "100000 is not <= 256"),
    (["weight_decay=.inf"], "weight_decay", "inf is not a finite number"),
    (["seed=4294967295"], "seed", "4294967295 is not <= 2147483647"),
    (["device=bogus"], "device", "'bogus' is not auto, cpu, cuda, cuda:N or mps"),
    (["crop=300"], "crop", "300 is not <= resize (256)"),
    (["method=bgc", "tau_fg=high"], "tau_fg", "'high' is not a number (a bgc hyperparameter"),
    (["method=minmaxcam", "set_size=2.5"], "set_size", "2.5 is not an int"),
    (["lambda1=2"], "lambda1", "not a hyperparameter of cam (it belongs to minmaxcam)"),
    (["learing_rate=1"], "learing_rate", "unknown key"),
    (["params.x=1"], "params.x", "nested keys are not supported"),
    (["params={x: 1}"], "params", "one at a time"),
    (["lr"], "lr", "expected KEY=VALUE"),
    (["lr="], "lr", "empty value"),
    (["method=nosuch"], "method", "unknown method 'nosuch'"),
    (["lr=[0.1"], "lr", "is not a YAML value"),
]


def _one_line(error: ConfigError, source: Path, says: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(f"{source}: "), message
    assert says in message, message


@pytest.mark.parametrize(("text", "says"), EXPERIMENTS, ids=[c[0][:80] for c in EXPERIMENTS])
def test_malformed_experiment_values(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"search_spaces: {SPACES}\n{text}\n" if not text.startswith("-") else text)
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    _one_line(error.value, path, says)


@pytest.mark.parametrize(("text", "says"), TRIALS, ids=[c[0] for c in TRIALS])
def test_malformed_trial_values(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    _one_line(error.value, path, says)


@pytest.mark.parametrize(("text", "says"), SPACE_FILES, ids=[c[0] for c in SPACE_FILES])
def test_malformed_search_space_values(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "base.yaml").write_text((SPACES / "base.yaml").read_text())
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        load_search_space(path)
    _one_line(error.value, path, says)


@pytest.mark.parametrize(("items", "key", "says"), OVERRIDES,
                         ids=[" ".join(c[0]) for c in OVERRIDES])
def test_malformed_overrides(tiny_synth: Path, tmp_path: Path, capsys, items: list[str],
                             key: str, says: str) -> None:
    args = [arg for item in items for arg in ("--set", item)]
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_synth), "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"wsol train: error: --set {key}: "), lines[0]
    assert says in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("text", ["trials_per_pair: ten", "methods: cam", "backbones: tiny",
                                  "method_params: {bgc: {tau_fg: high}}"])
def test_the_search_command_refuses_before_it_starts(tmp_path: Path, capsys, text: str) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"storage_path: {tmp_path / 'ray'}\n{text}\n")
    assert main(["search", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wsol: error: {path}: "), lines
    assert not (tmp_path / "ray").exists()


# Valid values at the bounds and the devices the trial runner takes are accepted.
@pytest.mark.parametrize("text", ["epochs: 10000", "batch_size: 65536", "num_workers: 256",
                                  "lr: 100", "weight_decay: 1", "seed: 2147483647",
                                  "resize: 224\ncrop: 224", "device: auto", "device: cpu",
                                  "device: cuda", "device: 'cuda:1'", "device: mps"])
def test_values_at_the_bounds_are_taken(tmp_path: Path, text: str) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(text + "\n")
    load_config(path)


@pytest.mark.parametrize("text", [
    "name: wsol_cub-2.run", "name: " + "x" * 100, "seed: 2147483647", "max_concurrent: 4096",
    "resources_per_trial: {cpu: 1024, gpu: 64, memory: 1e12}", "resources_per_trial: {}",
    "scheduler: {type: fifo}\ntrial: {epochs: 1}", "trial: {epochs: 2}",
    "scheduler: {type: asha, grace_period: 10}"])
def test_experiment_values_at_the_bounds_are_taken(tmp_path: Path, text: str) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(f"search_spaces: {SPACES}\n{text}\n")
    load_experiment(path)


# $WSOL_TRACKING_OUTAGE_LIMIT_S: a finite number of seconds > 0 (nan would disable the limit).
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5", "soon", ""])
def test_a_bad_outage_limit_is_refused_before_a_search(tmp_path: Path, monkeypatch, capsys,
                                                        value: str) -> None:
    monkeypatch.setenv(OUTAGE_LIMIT_ENV, value)
    path = tmp_path / "experiment.yaml"
    path.write_text(f"search_spaces: {SPACES}\n")
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    message = str(error.value)
    assert message == (f"${OUTAGE_LIMIT_ENV}: {value!r} is not a finite number of seconds "
                       "> 0"), message
    path.write_text(f"storage_path: {tmp_path / 'ray'}\n")
    assert main(["search", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and f"${OUTAGE_LIMIT_ENV}: {value!r}" in lines[0], lines
    assert not (tmp_path / "ray").exists()


def test_a_good_outage_limit_is_taken(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(OUTAGE_LIMIT_ENV, "120.5")
    path = tmp_path / "experiment.yaml"
    path.write_text(f"search_spaces: {SPACES}\n")
    load_experiment(path)
