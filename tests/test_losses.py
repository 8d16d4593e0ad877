import pytest
import torch
from torch import nn

from cyclestyle import losses
from cyclestyle.vgg import STYLE_LAYERS, VGGFeatures, VGGWeightsError, gram_matrix, load_vgg19_features


def test_cycle_loss_of_identical_images_is_zero():
    x = torch.rand(2, 3, 8, 8)
    assert losses.l1(x, x.clone()) == 0
    assert losses.l1(x, x + 0.25).item() == pytest.approx(0.25)


@pytest.mark.parametrize("cycle_a, cycle_b", [(None, None), (3.0, 7.0), (0.0, None)])
def test_cycle_weight_per_direction_and_identity_follows_the_target_domains(cycle_a, cycle_b):
    """loss.lambda_cycle_a/b (the reference's --lambda_A/--lambda_B): A->B->A and B->A->B weighed apart, and
    G_ab's identity (on B images) weighed by lambda_identity * lambda_cycle_b, G_ba's by ... * lambda_cycle_a."""
    from cyclestyle.config import LossConfig

    cfg = LossConfig(lambda_cycle=10.0, lambda_identity=0.5, lambda_cycle_a=cycle_a, lambda_cycle_b=cycle_b)
    objective = losses.CycleGANObjective(cfg)
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    logits = torch.ones(1, 1, 2, 2)  # LSGAN generator term 0: the loss is cycle + identity only
    weight = {"a": 10.0 if cycle_a is None else cycle_a, "b": 10.0 if cycle_b is None else cycle_b}
    for direction, real, target, part, other in (("ab", a, b, "a", "b"), ("ba", b, a, "b", "a")):
        # reconstruction off by 0.25 everywhere, identity off by 0.5
        loss, terms = objective.generator_terms(direction, real, fake_logits=logits, rec=real + 0.25, fake=real,
                                                identity=target + 0.5, target_real=target)
        assert terms[f"cycle_{part}"].item() == pytest.approx(0.25)
        assert terms[f"idt_{other}"].item() == pytest.approx(0.5)
        assert loss.item() == pytest.approx(weight[part] * 0.25 + 0.5 * weight[other] * 0.5)


def test_lsgan_targets():
    ones, zeros = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    assert losses.gan_generator_loss("lsgan", ones) == 0
    assert losses.gan_generator_loss("lsgan", zeros) == 1
    assert losses.gan_discriminator_loss("lsgan", ones, zeros) == 0
    assert losses.gan_discriminator_loss("lsgan", zeros, ones) == 1  # 0.5 * (1 + 1)


def test_vanilla_and_hinge_values():
    big = torch.full((1, 1, 2, 2), 20.0)
    assert losses.gan_discriminator_loss("vanilla", big, -big) < 1e-6
    assert losses.gan_generator_loss("vanilla", torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.6931, abs=1e-4)
    assert losses.gan_discriminator_loss("hinge", big, -big) == 0  # outside the margin
    assert losses.gan_discriminator_loss("hinge", torch.zeros(1), torch.zeros(1)).item() == 1.0
    assert losses.gan_generator_loss("hinge", torch.full((3,), 2.0)).item() == -2.0
    with pytest.raises(ValueError, match="unknown gan_mode"):
        losses.gan_generator_loss("wgan", big)


def test_gram_of_known_tensor():
    feat = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2).repeat(1, 2, 1, 1)
    feat[0, 1] *= -1
    g = gram_matrix(feat)
    # sum of squares 30, normalised by C*H*W = 8; channel 1 = -channel 0
    assert torch.allclose(g, torch.tensor([[[30 / 8, -30 / 8], [-30 / 8, 30 / 8]]]))


def test_gram_is_fp32_under_bf16_autocast():
    feat = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(feat.bfloat16())
    assert g.dtype == torch.float32


def test_gram_target_running_mean_then_loss():
    target = losses.GramTarget([2], momentum=0.9)
    a, b = torch.eye(2), 3 * torch.eye(2)
    target.update([a[None]])
    target.update([b[None]])
    assert torch.allclose(target.gram_0, 2 * torch.eye(2))  # exact mean of the first updates
    assert target.loss([2 * torch.eye(2)[None]]) == 0
    assert target.loss([torch.zeros(1, 2, 2)]).item() == pytest.approx(2.0)  # mean of (0-2)^2 over 2 of 4
    for _ in range(100):  # after 1/(1-momentum) updates it becomes an EMA that forgets
        target.update([b[None]])
    assert torch.allclose(target.gram_0, b, atol=1e-3)
    assert set(target.state_dict()) == {"gram_0", "count"}


def small_features(x: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
    """Two ReLU layers of a fixed random conv net, every activation multiplied by ``scale``."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, stride=2, padding=1)]
    feats = []
    for conv in convs:
        x = torch.relu(conv(x))
        feats.append(x)
    return [scale * f for f in feats]


def test_style_loss_is_scale_free_where_the_unnormalised_one_is_not():
    torch.manual_seed(1)
    fake, real = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        values, old = [], []
        for scale in (1.0, 10.0):  # every activation x10: every Gram x100
            g_fake = [gram_matrix(f) for f in small_features(fake, scale)]
            g_real = [gram_matrix(f) for f in small_features(real, scale)]
            total, per_layer = losses.style_loss(g_fake, g_real)
            values.append(torch.stack([total, *per_layer]))
            mean = losses.GramTarget([g.shape[-1] for g in g_real])
            mean.update(g_real)
            old.append(mean.loss(g_fake))
    assert values[0].min() > 0
    assert torch.allclose(values[1], values[0], rtol=1e-5, atol=0)
    assert (old[1] / old[0]).item() == pytest.approx(1e4, rel=1e-4)  # the unnormalised loss sees the scale


def test_style_loss_zero_at_target_and_known_value():
    grams = [torch.rand(2, 4, 4), torch.rand(2, 6, 6)]
    total, per_layer = losses.style_loss(grams, [g.clone() for g in grams])
    assert total == 0 and all(v == 0 for v in per_layer)
    assert losses.style_loss(grams, [g + 0.01 for g in grams])[0] > 0
    # Layer 0: target 2I (energy 8), fakes 2I (error 0) and diag(2, 0) (error 4): mean(0, 4/8) = 0.25.
    # Layer 1: target [[1]], fakes [[3]] (4/1) and [[1]] (0): mean 2. Total: mean over layers, 1.125.
    fake = [torch.stack([2 * torch.eye(2), torch.diag(torch.tensor([2.0, 0.0]))]), torch.tensor([[[3.0]], [[1.0]]])]
    total, per_layer = losses.style_loss(fake, [2 * torch.eye(2), torch.ones(1, 1)])
    assert [v.item() for v in per_layer] == pytest.approx([0.25, 2.0])
    assert total.item() == pytest.approx(1.125)


def test_style_loss_pairs_each_fake_with_its_own_target():
    torch.manual_seed(2)
    a, b = torch.rand(4, 4), torch.rand(4, 4) + 1
    targets = [torch.stack([a, b])]  # per-image targets, as style_target=batch passes them
    assert losses.style_loss([torch.stack([a, b])], targets)[0] == 0
    swapped = losses.style_loss([torch.stack([b, a])], targets)[0]
    expected = 0.5 * ((b - a).square().sum() / a.square().sum() + (a - b).square().sum() / b.square().sum())
    assert swapped.item() == pytest.approx(expected.item(), rel=1e-6)


def test_r1_penalty_of_linear_discriminator():
    disc = nn.Conv2d(3, 1, 1, bias=False)
    nn.init.constant_(disc.weight, 2.0)
    real = torch.randn(2, 3, 4, 4)
    # d/dx sum(2 * x_c) = 2 per element: |grad|^2 = 4 * 3 * 16 = 192 per sample, halved
    assert losses.r1_penalty(disc, real).item() == pytest.approx(96.0)


def test_vgg_features_layers_and_frozen():
    vgg = VGGFeatures("random")
    assert vgg.channels == [64, 128, 256, 512, 512]
    feats = vgg(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert list(feats) == list(STYLE_LAYERS)
    assert feats["relu3_1"].shape == (1, 256, 8, 8)
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    assert len(vgg.features) == 30  # truncated after relu5_1


def test_style_loss_gradient_reaches_image_not_vgg():
    vgg = VGGFeatures("random")
    target = losses.GramTarget(vgg.channels)
    target.update(vgg.grams(torch.rand(1, 3, 32, 32) * 2 - 1))
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    loss, _ = losses.style_loss(vgg.grams(fake), target.grams)
    loss.backward()
    assert loss > 0 and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_vgg_weights_from_local_file_round_trip(tmp_path):
    from torchvision.models import vgg19

    torch.manual_seed(3)
    full = vgg19(weights=None)
    path = tmp_path / "vgg19.pth"
    torch.save(full.state_dict(), path)
    loaded = load_vgg19_features(str(path))
    assert torch.equal(loaded[0].weight, full.features[0].weight)


def test_vgg_weights_missing_file_message(tmp_path):
    with pytest.raises(VGGWeightsError, match="file not found.*style_ab=0 loss.style_ba=0"):
        load_vgg19_features(str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(VGGWeightsError, match="does not hold VGG-19 weights"):
        load_vgg19_features(str(wrong))


def test_vgg_imagenet_offline_message(no_network, monkeypatch, tmp_path):
    """Offline, the imagenet weights fail with instructions instead of falling back to random. The network
    is blocked at the socket layer, so the test never downloads, with or without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(VGGWeightsError, match=r"vgg19-dcbb9e9d\.pth.*loss\.vgg_weights="):
        load_vgg19_features("imagenet")
    assert "download.pytorch.org" in no_network  # torchvision really tried, and the block stopped it
    assert not list(tmp_path.rglob("*.pth"))
