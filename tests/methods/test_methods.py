"""The mechanics of each method on hand-made tensors and tiny models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from wsol.methods import build_method
from wsol.methods.bgc import (
    AttentiveDropout,
    masked_mean,
    norm_loss,
    similarity_and_norm,
    similarity_loss,
)
from wsol.methods.minmaxcam import common_region_loss, full_region_loss, stage_two_loss
from wsol.methods.weightmap import label_free_score
from wsol.trial.config import TrialConfig

CPU = torch.device("cpu")


def make(method: str, **params) -> object:
    config = TrialConfig(method=method, backbone="tiny", epochs=3, params=params)
    torch.manual_seed(0)
    return build_method(config, num_classes=3, device=CPU)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


# MinMaxCAM --------------------------------------------------------------------------------

def test_crr_and_frr_on_hand_made_features() -> None:
    # one set of S = 3, K = 2: pairwise squared distances 25, 18, 1 (each counted twice), each
    # a mean over the K = 2 channels
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 3.0]])
    expected_crr = 2 * (25 + 18 + 1) / 2 / (3 * 2)
    assert float(common_region_loss(features, 3)) == pytest.approx(expected_crr)
    two_sets = torch.cat([features, features + 7])
    assert float(common_region_loss(two_sets, 3)) == pytest.approx(expected_crr)
    full = torch.tensor([[1.0, 0.0], [3.0, 4.0], [3.0, 1.0]])
    assert float(full_region_loss(features, full)) == pytest.approx((1 + 0 + 4) / 2 / 3)


def test_crr_and_frr_use_the_mean_over_channels() -> None:
    """Two sets of S = 2 images, K = 3 channels; ||.||^2 is the authors' MSE (mean over K).

    Set 1: f0 = (1, 2, 3), f1 = (2, 0, 3): squared differences (1, 4, 0), mean 5/3. With S = 2
    CRR = 1/(2*1) * (5/3 + 5/3) = 5/3.
    Set 2: f2 = (0, 0, 0), f3 = (1, 1, 1): squared differences (1, 1, 1), mean 1, CRR = 1.
    CRR over the batch = (5/3 + 1) / 2 = 4/3 (summed over channels it would be (5 + 3) / 2 = 4).
    FRR with f^o = (1, 2, 1), (2, 0, 3), (0, 3, 0), (1, 1, 1): squared differences (0, 0, 4),
    0, (0, 9, 0), 0 -> means 4/3, 0, 3, 0; per set (4/3 + 0)/2 = 2/3 and (3 + 0)/2 = 3/2,
    over the batch (2/3 + 3/2) / 2 = 13/12 (summed over channels: 13/4).
    """
    masked = torch.tensor([[1.0, 2.0, 3.0], [2.0, 0.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    full = torch.tensor([[1.0, 2.0, 1.0], [2.0, 0.0, 3.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(common_region_loss(masked, 2)) == pytest.approx(4 / 3)
    assert float(full_region_loss(masked, full)) == pytest.approx(13 / 12)


def test_stage_two_updates_only_the_linear_layer_through_h() -> None:
    method = make("minmaxcam", set_size=2, classes_per_batch=2)
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 0, 1, 1])
    before_backbone = snapshot(method.model.backbone)
    before_fc = method.model.fc.weight.detach().clone()
    losses = stage_two_loss(method.model, images, labels, 2, 1.0, 1.0)
    method.step("stage2", losses, losses["stage2"], epoch=0)
    for key, value in method.model.backbone.state_dict().items():
        assert torch.equal(value, before_backbone[key]), f"backbone {key} changed"
    assert not torch.equal(method.model.fc.weight, before_fc)
    assert all(p.grad is None for p in method.model.backbone.parameters())
    assert all(p.requires_grad for p in method.model.backbone.parameters())


def test_stage_two_gradient_needs_h_attached() -> None:
    """The only route from the loss to w is H; with H detached there would be no gradient."""
    method = make("minmaxcam", set_size=2, classes_per_batch=2)
    losses = stage_two_loss(method.model, torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]),
                            2, 1.0, 1.0)
    (grad,) = torch.autograd.grad(losses["stage2"], [method.model.fc.weight])
    assert float(grad.abs().sum()) > 0
    assert float(grad[2].abs().sum()) == 0  # class 2 is in no image: its map is never used


def test_minmaxcam_batches_are_class_sets() -> None:
    method = make("minmaxcam", set_size=3, classes_per_batch=2)
    labels = [0] * 6 + [1] * 6 + [2] * 6
    batch = next(iter(method.batch_sampler(labels, seed=0)))
    classes = [labels[i] for i in batch]
    assert len(batch) == 6 and classes[:3] == [classes[0]] * 3 and classes[3:] == [classes[3]] * 3


# BGC --------------------------------------------------------------------------------------

def test_similarity_and_norm_decomposition() -> None:
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.zeros(1, 2, 1, 3)
    features[0, :, 0, 0] = torch.tensor([2.0, 0.0])  # cos 1 with class 0, norm 2
    features[0, :, 0, 1] = torch.tensor([0.0, 1.0])  # cos 0, norm 1
    features[0, :, 0, 2] = torch.tensor([-1.0, 0.0])  # cos -1, norm 1
    similarity, norm_hat, cos_all = similarity_and_norm(features, weights, torch.tensor([0]))
    torch.testing.assert_close(similarity, torch.tensor([[[1.0, 0.0, -1.0]]]))
    torch.testing.assert_close(norm_hat, torch.tensor([[[1.0, 0.0, 0.0]]]), atol=1e-6, rtol=0)
    assert cos_all.shape == (1, 2, 1, 3)
    # the CAM is ||w_c|| * ||F_u|| * S_u
    cam = torch.einsum("k,bkhw->bhw", weights[0], features)
    torch.testing.assert_close(cam, features.norm(dim=1) * similarity)


def test_similarity_loss_on_hand_made_maps() -> None:
    similarity = torch.tensor([[[0.9, 0.5, -0.2, -0.6]]])
    norm_hat = torch.tensor([[[1.0, 0.7, 0.3, 0.0]]])
    # fg (norm_hat > 0.6): 0.9, 0.5 -> mean 0.7; bg (< 0.1): -0.6
    assert float(similarity_loss(similarity, norm_hat, 0.6, 0.1)) == pytest.approx(-0.7 - 0.6)


def test_norm_loss_plain_and_fine_grained() -> None:
    similarity = torch.tensor([[[0.9, -0.5, -0.2]]])
    norm_hat = torch.tensor([[[1.0, 0.4, 0.2]]])
    cos_all = torch.tensor([[[[0.9, -0.5, -0.2]], [[-0.1, 0.3, -0.4]]]])
    # fg (S > 0): 1.0; bg (S < 0): 0.4, 0.2
    assert float(norm_loss(norm_hat, similarity, cos_all, False)) == pytest.approx(-1.0 + 0.3)
    # fine-grained: fg = some class > 0 -> 1.0, 0.4 (the middle one through class 1);
    # bg = every class <= 0 -> only the last position
    assert float(norm_loss(norm_hat, similarity, cos_all, True)) == pytest.approx(-0.7 + 0.2)


def test_bgc_losses_from_hand_made_features() -> None:
    """L_sim and L_norm end to end from a 1 x 4 feature map, K = 2, two classes, target 0.

    w0 = (1, 0), w1 = (0, 1). Positions: u0 = (3, 0), u1 = (-3, 4), u2 = (0, -2), u3 = (-1, 0).
    Norms 3, 5, 2, 1 -> min-max normalised 0.5, 1, 0.25, 0.
    cos to class 0 (S): 1, -0.6, 0, -1; cos to class 1: 0, 0.8, -1, 0.
    L_sim (tau_fg 0.6, tau_bg 0.1): fg = {u1} (S -0.6), bg = {u3} (S -1): 0.6 - 1 = -0.4.
    L_norm, general: fg = {S > 0} = {u0} (0.5), bg = {S < 0} = {u1, u3} (mean 0.5): 0.
    L_norm, fine-grained: max over classes 1, 0.8, 0, 0 -> fg = {u0, u1} (mean 0.75), bg =
    {u2, u3} (mean 0.125): -0.625. u1 has a negative target cosine but a positive one to
    class 1: it is foreground, not background (with a target-class fg it would be neither,
    giving -0.5 + 0.125 = -0.375).
    """
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[3.0, -3.0, 0.0, -1.0], [0.0, 4.0, -2.0, 0.0]])[None, :, None, :]
    similarity, norm_hat, cos_all = similarity_and_norm(features, weights, torch.tensor([0]))
    torch.testing.assert_close(similarity, torch.tensor([[[1.0, -0.6, 0.0, -1.0]]]))
    torch.testing.assert_close(norm_hat, torch.tensor([[[0.5, 1.0, 0.25, 0.0]]]))
    assert float(similarity_loss(similarity, norm_hat, 0.6, 0.1)) == pytest.approx(-0.4)
    assert float(norm_loss(norm_hat, similarity, cos_all, False)) == pytest.approx(0.0, abs=1e-6)
    assert float(norm_loss(norm_hat, similarity, cos_all, True)) == pytest.approx(-0.625)


def test_bgc_defaults_are_the_cub_vgg16_setting() -> None:
    """One coherent row of the paper (CUB, VGG16, Sec. 5.4), fine-grained L_norm included."""
    assert type(make("bgc")).defaults == {
        "lambda_sim": 0.5, "lambda_norm": 0.15, "lambda_drop": 3.0, "tau_fg": 0.6,
        "tau_bg": 0.1, "gamma": 0.8, "p": 0.5, "warm": 20, "fine_grained": True,
        "warm_batch_size": None,
    }


def test_masked_mean_of_an_empty_region_is_zero() -> None:
    values = torch.ones(2, 2, 2)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = True
    assert float(masked_mean(values, mask)) == pytest.approx(0.5)


def test_attentive_dropout_drops_only_peaks_at_rate_p() -> None:
    torch.manual_seed(0)
    x = torch.zeros(2000, 4, 3, 3)
    x[:, :, 0, 0] = 10.0  # the peak
    x[:, :, 1, 1] = 8.5  # above 0.8 * max
    x[:, :, 2, 2] = 7.0  # below 0.8 * max
    x[:, :, 0, 2] = 1.0
    dropout = AttentiveDropout(gamma=0.8, p=0.3).train()
    out = dropout(x)
    dropped = (out == 0) & (x != 0)
    assert not dropped[:, :, 2, 2].any() and not dropped[:, :, 0, 2].any()
    for y, xx in ((0, 0), (1, 1)):
        rate = dropped[:, 0, y, xx].float().mean().item()
        assert rate == pytest.approx(0.3, abs=0.04)
        # a position is dropped across all channels together
        assert torch.equal(dropped[:, 0, y, xx], dropped[:, 3, y, xx])
    assert torch.equal(dropout.eval()(x), x)


def test_bgc_warm_epochs_use_ce_and_drop_only() -> None:
    method = make("bgc", warm=1)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    assert set(method.train_batch(images, labels, epoch=0)) == {"ce", "drop"}
    assert set(method.train_batch(images, labels, epoch=1)) == {"ce", "drop", "sim", "norm"}


def test_bgc_rejects_tau_bg_not_below_tau_fg() -> None:
    with pytest.raises(ValueError, match="tau_bg < tau_fg"):
        make("bgc", tau_fg=0.3, tau_bg=0.3)


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ValueError, match="lambda_typo"):
        make("cam", lambda_typo=1.0)


# Weight map -------------------------------------------------------------------------------

def test_weightmap_generator_trains_against_a_frozen_classifier() -> None:
    method = make("weightmap", generator_encoder="tiny", classifier_epochs=1)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    method.model.train()
    f_before, g_before = snapshot(method.model.f), snapshot(method.model.g)
    method.train_batch(images, labels, epoch=0)  # phase f
    assert any(not torch.equal(v, f_before[k]) for k, v in method.model.f.state_dict().items())
    assert all(torch.equal(v, g_before[k]) for k, v in method.model.g.state_dict().items())
    f_after = snapshot(method.model.f)
    losses = method.train_batch(images, labels, epoch=1)  # phase g
    assert set(losses) == {"ce", "l1"}
    for key, value in method.model.f.state_dict().items():
        assert torch.equal(value, f_after[key]), f"f changed in the generator phase: {key}"
    assert any(not torch.equal(v, g_before[k]) for k, v in method.model.g.state_dict().items())
    assert not method.evaluates(0) and method.evaluates(1)


def test_weightmap_l1_is_the_mean_of_the_map() -> None:
    """lambda * mean |M| over pixels and images: in [0, 1], the scale of the paper's lambda = 1."""
    method = make("weightmap", generator_encoder="tiny", classifier_epochs=1)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    method.model.train()
    with torch.no_grad():
        expected = float(method.model.g(images).mean())  # train-mode BN: as in the step
    losses = method.train_batch(images, labels, epoch=1)
    assert losses["l1"] == pytest.approx(expected, rel=1e-5)
    assert 0 < losses["l1"] < 1


def test_weightmap_f_is_a_plain_resnet_at_one_rate() -> None:
    """The paper's f: torchvision's ResNet18 (stride 32) + one linear layer, a single lr."""
    config = TrialConfig(method="weightmap", backbone="resnet18", epochs=3, lr=0.003,
                         lr_classifier_ratio=10.0,
                         params={"generator_encoder": "tiny", "classifier_epochs": 1})
    torch.manual_seed(0)
    method = build_method(config, num_classes=3, device=CPU)
    logits, features = method.model.f(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 512, 2, 2) and logits.shape == (2, 3)  # 64 / 32 = 2
    (group,) = method.optimizers["f"].param_groups
    assert group["lr"] == pytest.approx(0.003)
    assert {id(p) for p in group["params"]} == {id(p) for p in method.model.f.parameters()}


def test_weightmap_f_has_one_rate_on_the_tiny_backbone_too() -> None:
    method = make("weightmap", generator_encoder="tiny", classifier_epochs=1, variant="II",
                  set_size=2, classes_per_batch=2)
    (group,) = method.optimizers["f"].param_groups
    expected = [*method.model.f.parameters(), *method.model.embed.parameters()]
    assert {id(p) for p in group["params"]} == {id(p) for p in expected}
    assert group["lr"] == pytest.approx(method.config.lr)


def test_weightmap_method_two_uses_triplets() -> None:
    method = make("weightmap", generator_encoder="tiny", classifier_epochs=1, variant="II",
                  set_size=2, classes_per_batch=2)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1])
    method.model.train()
    assert set(method.train_batch(images, labels, epoch=0)) == {"triplet"}
    assert set(method.train_batch(images, labels, epoch=1)) == {"inner", "outer", "l1"}
    maps, logits = method.scoremaps(images, labels)
    assert maps.shape == (4, 32, 32) and logits is None


def test_label_free_score_on_hand_made_maps() -> None:
    one_blob = np.zeros((1, 10, 10))
    one_blob[0, 2:5, 2:5] = 1.0
    assert label_free_score(one_blob) == pytest.approx(1.0)
    two_blobs = np.zeros((1, 20, 20))
    two_blobs[0, 1:7, 1:7] = 0.5  # area 36, mass 18 (the largest contour)
    two_blobs[0, 12:14, 12:14] = 1.0  # area 4, mass 4
    two_blobs[0, 18, 0] = 0.05  # below max/10: not counted at all
    assert label_free_score(two_blobs) == pytest.approx(18 / 22)
    assert label_free_score(np.zeros((1, 5, 5))) == 0.0
    assert label_free_score(np.stack([one_blob[0], np.zeros((10, 10))])) == pytest.approx(0.5)


def test_state_dict_round_trip_restores_the_model() -> None:
    method = make("bgc")
    state = copy.deepcopy(method.state_dict())
    method.train_batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), epoch=0)
    method.load_state_dict(state)
    for key, value in method.model.state_dict().items():
        assert torch.equal(value, state["model"][key])
