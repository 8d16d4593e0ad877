import pytest
import torch
from torch import nn

from cyclestyle import nets
from cyclestyle.config import ModelConfig


@pytest.mark.parametrize("name,upsample", [(name, "deconv") for name in sorted(nets.GENERATORS)]
                         + [("resnet_6blocks", "resize"), ("unet_128", "resize")])
def test_generator_shape_gradients_finite(name, upsample):
    torch.manual_seed(0)
    size = max(nets.GENERATORS[name].size_multiple, 16)
    net = nets.build_generator(ModelConfig(generator=name, ngf=4, upsample=upsample))
    x = torch.randn(2, 3, size, size + nets.GENERATORS[name].size_multiple)  # non-square
    y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.abs().max() <= 1  # tanh output
    y.square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(nets.DISCRIMINATORS))
@pytest.mark.parametrize("spectral", [False, True])
def test_discriminator_shape_gradients_finite(name, spectral):
    torch.manual_seed(0)
    net = nets.build_discriminator(ModelConfig(discriminator=name, ndf=8, spectral_norm=spectral))
    x = torch.randn(2, 3, 64, 64)
    y = net(x)
    assert y.shape[0] == 2 and torch.isfinite(y).all()
    if name == "patch":
        assert y.shape[1:] == (1, 6, 6)
    if name == "multiscale":  # 6x6 patches at full scale and 2x2 at half scale, flattened
        assert y.shape == (2, 36 + 4)
    y.mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_patchgan_receptive_field_is_70():
    net = nets.PatchDiscriminator(ndf=4, n_layers=3, norm="none")  # instance norm sees the whole image
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    y = net(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    assert int(rows.max() - rows.min() + 1) == 70


def test_multiscale_coarse_patches_see_twice_the_context():
    net = nets.MultiscalePatchDiscriminator(ndf=4, n_layers=3, norm="none")
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    y = net(x)
    fine = net.scales[0](x).numel()
    y[0, fine + (y.shape[1] - fine) // 2].backward()  # a coarse patch near the centre
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    assert int(rows.max() - rows.min() + 1) > 2 * 70 - 4


def test_spectral_norm_bounds_largest_singular_value():
    torch.manual_seed(0)
    net = nets.build_discriminator(ModelConfig(ndf=8, spectral_norm=True, init="normal", init_gain=1.0))
    for _ in range(30):  # power iterations run in training-mode forwards
        net(torch.randn(1, 3, 32, 32))
    conv = net.model[0]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(conv.weight.shape[0], -1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("kind", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_types(kind):
    torch.manual_seed(0)
    net = nets.init_weights(nn.Sequential(nn.Conv2d(64, 64, 3), nn.Conv2d(64, 64, 3)), kind, 0.02)
    w = net[0].weight
    assert net[0].bias.abs().sum() == 0
    if kind == "normal":
        assert w.std().item() == pytest.approx(0.02, rel=0.05)
    elif kind == "kaiming":
        assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    elif kind == "orthogonal":
        flat = w.reshape(64, -1)
        assert torch.allclose(flat @ flat.T, 0.02**2 * torch.eye(64), atol=1e-6)
    else:
        assert w.std().item() == pytest.approx(0.02 * (2 / (64 * 9 * 2)) ** 0.5, rel=0.05)


def test_resnet_block_count_and_width():
    net = nets.build_generator(ModelConfig(generator="resnet_9blocks", ngf=16))
    assert sum(isinstance(m, nets.ResnetBlock) for m in net.modules()) == 9
    assert net.model[1].out_channels == 16


def _decoder_upsampling(net: nn.Module) -> nn.Sequential:
    """The ResNet generator's first x2 upsampling, up to (without) its norm."""
    layers = list(net.model)
    first = next(i for i, m in enumerate(layers) if isinstance(m, (nn.ConvTranspose2d, nn.Upsample)))
    end = next(i for i in range(first, len(layers)) if isinstance(layers[i], nn.InstanceNorm2d))
    return nn.Sequential(*layers[first:end])


@torch.no_grad()
def test_resize_upsampling_has_no_checkerboard():
    """On a constant feature map a stride-2 transposed conv gives a period-2 pattern (its taps overlap
    unevenly); nearest x2 + conv gives a constant map. Same parameter count either way."""
    torch.manual_seed(0)
    nets_by_kind = {kind: nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=8, upsample=kind,
                                                           init_gain=0.3)) for kind in nets.UPSAMPLING}
    counts = {kind: sum(p.numel() for p in net.parameters()) for kind, net in nets_by_kind.items()}
    assert counts["resize"] == counts["deconv"]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in nets_by_kind["resize"].modules())
    x = torch.ones(1, 32, 8, 8)  # ngf 8 -> 32 channels after two downsamplings
    spread = {}
    for kind, net in nets_by_kind.items():
        y = _decoder_upsampling(net)(x)[..., 2:-2, 2:-2]  # away from the borders
        assert y.shape[-2:] == (12, 12)
        spread[kind] = (y - y.mean(dim=(-2, -1), keepdim=True)).abs().max().item()
    assert spread["resize"] < 1e-5
    assert spread["deconv"] > 0.1


def test_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="unknown upsampling 'bilinear'"):
        nets.ResnetGenerator(ngf=4, n_blocks=1, upsample="bilinear")


def test_unet_resize_upsampling_replaces_every_transposed_conv():
    """model.upsample applies to the U-Nets too: no transposed convolution is left, the output keeps its shape."""
    net = nets.build_generator(ModelConfig(generator="unet_128", ngf=4, upsample="resize"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert sum(isinstance(m, nn.Upsample) for m in net.modules()) == 7  # one per level
    assert net(torch.randn(1, 3, 128, 128)).shape == (1, 3, 128, 128)


@pytest.mark.parametrize("generator, levels", [("unet_128", 7), ("unet_256", 8)])
def test_unet_max_mult_caps_the_deepest_levels(generator, levels):
    """Level widths double from ngf up to ngf * unet_max_mult: 8 gives the reference's widths (and its
    parameter count, 41.8 M at ngf 64 for unet_128), 4 and 2 narrow only the levels beyond the cap."""
    def down_widths(net):
        return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]

    widths = {m: down_widths(nets.build_generator(ModelConfig(generator=generator, ngf=4, unet_max_mult=m)))
              for m in (8, 4, 2)}
    assert widths[8] == [4, 8, 16] + [32] * (levels - 3)
    assert widths[4] == [4, 8, 16] + [16] * (levels - 3)
    assert widths[2] == [4, 8] + [8] * (levels - 2)
    for m in (4, 2):
        net = nets.build_generator(ModelConfig(generator=generator, ngf=4, unet_max_mult=m))
        size = nets.GENERATORS[generator].size_multiple
        assert net(torch.randn(1, 3, size, size)).shape == (1, 3, size, size)
    reference = nets.build_generator(ModelConfig(generator="unet_128", ngf=64, unet_max_mult=8))
    assert sum(p.numel() for p in reference.parameters()) == 41_825_667
    default = nets.build_generator(ModelConfig(generator="unet_128", ngf=64))  # the default width, 2
    assert down_widths(default) == [64] + [128] * 6


@pytest.mark.parametrize("batch", [1, 3])
def test_instance_norm_channels_last_path_equals_torchs(batch):
    """The per-image batch norm that channels_last inputs take: torch's instance norm, values and gradients."""
    torch.manual_seed(0)
    x = torch.randn(batch, 5, 7, 6, dtype=torch.float64)
    upstream = torch.randn_like(x)
    fast_in = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    plain_in = x.clone().requires_grad_()
    fast = nets.InstanceNorm2d(5)(fast_in)
    plain = nn.functional.instance_norm(plain_in, eps=1e-5)
    (fast * upstream).sum().backward()
    (plain * upstream).sum().backward()
    assert fast.is_contiguous(memory_format=torch.channels_last)  # no conversion back
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_in.grad, plain_in.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["resnet_6blocks", "patch"])
def test_channels_last_networks_compute_what_the_nchw_layers_compute(name):
    """ResNet generators and PatchGANs run channels_last on CPU (faster, README "Speed"); their outputs and
    every gradient equal those of the same layers fed NCHW (torch's own instance norm path)."""
    torch.manual_seed(0)
    is_gen = name in nets.GENERATORS
    net = (nets.build_generator(ModelConfig(generator=name, ngf=4)) if is_gen
           else nets.build_discriminator(ModelConfig(discriminator=name, ndf=4))).double()
    x = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    formats = []
    net.model[1].register_forward_hook(lambda m, i, out: formats.append(out.is_contiguous()))
    grads = []
    for forward in (net, net.model):  # net converts to channels_last; net.model runs the layers as given
        net.zero_grad()
        y = forward(x)
        y.square().mean().backward()
        grads.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    assert formats == [False, True]  # channels_last in net(x), NCHW in net.model(x)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=1e-10)
    for g_fast, g_plain in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-9, atol=1e-10)


def test_bf16_autocast_keeps_pads_and_norms_in_bf16_and_channels_last():
    """Under CPU autocast, torch pads in fp32 and instance-normalises channels_last inputs in NCHW: each a
    conversion there and back. A ResNet generator's pads and norms keep bf16 and channels_last instead, and
    only the final tanh output leaves the network."""
    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=4))
    seen = []
    for m in net.modules():
        if isinstance(m, (nn.ReflectionPad2d, nn.InstanceNorm2d)):
            m.register_forward_hook(lambda m, i, out: seen.append(
                (type(m).__name__, out.dtype, out.is_contiguous(memory_format=torch.channels_last))))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(torch.randn(1, 3, 32, 32))
    pads = sum(1 for name, *_ in seen if name == "ReflectionPad2d")
    assert pads == 2 + 2 * 6 and len(seen) == pads + 1 + 2 + 2 * 6 + 2  # norms: stem, downs, blocks, ups
    assert {(dtype, cl) for _, dtype, cl in seen[1:]} == {(torch.bfloat16, True)}, seen
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, 32, 32)


def test_unet_translates_channels_last_in_bf16_only():
    """The U-Net's NCHW kernels are faster in fp32 and in training, its channels_last ones in bf16 inference
    (README "Speed"): its activations take the faster order, with the same translation within bf16 rounding."""
    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator="unet_128", ngf=4))
    norm = next(m for m in net.modules() if isinstance(m, nn.InstanceNorm2d))
    formats = []
    norm.register_forward_hook(lambda m, i, out: formats.append(out.is_contiguous(memory_format=torch.channels_last)
                                                                and not out.is_contiguous()))
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, plain = net(x).float(), net.model(x).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)  # training
    assert formats == [False, True, False, False]  # fp32 NCHW; bf16 channels_last; net.model as given; training
    assert (fast - plain).abs().max() < 0.02
