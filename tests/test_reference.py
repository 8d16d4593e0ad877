"""Reference CycleGAN generator files: layout inference, parity, refusal of bad files, import, every command.

The reference-layout files here are written by this test's own code from the documented key names and
shapes of junyanz/pytorch-CycleGAN-and-pix2pix's ResnetGenerator / UnetGenerator (not its classes), and
their translation is computed by a functional forward written from the same description: the parity test
compares cyclestyle's imported network against that, not against itself.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cyclestyle import reference
from cyclestyle.checkpoint import CheckpointError, read_generators
from cyclestyle.cli import main
from cyclestyle.translate import Translator, load_generator, load_generators

# --- reference layouts, written from the documentation ---------------------------------------------------

def _conv(state, key, out_ch, in_ch, k, gen, bias=True):
    state[f"{key}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=gen) * 0.2
    if bias:
        state[f"{key}.bias"] = torch.randn(out_ch, generator=gen) * 0.1


def _stats(state, key, ch):  # what pre-0.4 files carry for every InstanceNorm layer
    state[f"{key}.running_mean"] = torch.zeros(ch)
    state[f"{key}.running_var"] = torch.ones(ch)
    state[f"{key}.num_batches_tracked"] = torch.tensor(0)


def resnet_reference_state(ngf=4, n_blocks=6, dropout=False, stray_stats=False, seed=0):
    """Keys model.{1,4,7}, model.{10..}.conv_block.{1,5 or 6}, two transposed convs, the last 7x7 conv."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    _conv(s, "model.1", ngf, 3, 7, g)
    _conv(s, "model.4", 2 * ngf, ngf, 3, g)
    _conv(s, "model.7", 4 * ngf, 2 * ngf, 3, g)
    second = 6 if dropout else 5
    for i in range(10, 10 + n_blocks):
        _conv(s, f"model.{i}.conv_block.1", 4 * ngf, 4 * ngf, 3, g)
        _conv(s, f"model.{i}.conv_block.{second}", 4 * ngf, 4 * ngf, 3, g)
        if stray_stats:
            _stats(s, f"model.{i}.conv_block.2", 4 * ngf)
            _stats(s, f"model.{i}.conv_block.{second + 1}", 4 * ngf)
    up = 10 + n_blocks
    s[f"model.{up}.weight"] = torch.randn(4 * ngf, 2 * ngf, 3, 3, generator=g) * 0.2  # ConvTranspose: (in, out)
    s[f"model.{up}.bias"] = torch.randn(2 * ngf, generator=g) * 0.1
    s[f"model.{up + 3}.weight"] = torch.randn(2 * ngf, ngf, 3, 3, generator=g) * 0.2
    s[f"model.{up + 3}.bias"] = torch.randn(ngf, generator=g) * 0.1
    _conv(s, f"model.{up + 7}", 3, ngf, 7, g)
    if stray_stats:
        for key, ch in (("model.2", ngf), ("model.5", 2 * ngf), ("model.8", 4 * ngf), (f"model.{up + 1}", 2 * ngf)):
            _stats(s, key, ch)
    return s


def resnet_reference_forward(s, x, n_blocks):
    inorm = F.instance_norm
    x = F.relu(inorm(F.conv2d(F.pad(x, (3,) * 4, mode="reflect"), s["model.1.weight"], s["model.1.bias"])))
    for key in ("model.4", "model.7"):
        x = F.relu(inorm(F.conv2d(x, s[f"{key}.weight"], s[f"{key}.bias"], stride=2, padding=1)))
    for i in range(10, 10 + n_blocks):
        second = 5 if f"model.{i}.conv_block.5.weight" in s else 6
        h = F.pad(x, (1,) * 4, mode="reflect")
        h = F.relu(inorm(F.conv2d(h, s[f"model.{i}.conv_block.1.weight"], s[f"model.{i}.conv_block.1.bias"])))
        h = F.pad(h, (1,) * 4, mode="reflect")
        x = x + inorm(F.conv2d(h, s[f"model.{i}.conv_block.{second}.weight"], s[f"model.{i}.conv_block.{second}.bias"]))
    for key in (f"model.{10 + n_blocks}", f"model.{13 + n_blocks}"):
        x = F.relu(inorm(F.conv_transpose2d(x, s[f"{key}.weight"], s[f"{key}.bias"], stride=2, padding=1,
                                            output_padding=1)))
    last = f"model.{17 + n_blocks}"
    return torch.tanh(F.conv2d(F.pad(x, (3,) * 4, mode="reflect"), s[f"{last}.weight"], s[f"{last}.bias"]))


def _unet_levels(ngf, num_downs):
    """(outer, inner) channels from the outermost level inwards."""
    return [(3, ngf), (ngf, 2 * ngf), (2 * ngf, 4 * ngf), (4 * ngf, 8 * ngf)] + [(8 * ngf, 8 * ngf)] * (num_downs - 4)


def unet_reference_state(ngf=2, num_downs=7, seed=0):
    """Nested keys: outermost model.model.{0,3}; then P.model.{1,5} with the next level at P.model.3;
    the innermost P.model.{1,3}. Transposed convs are stored (in, out, 4, 4)."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    prefix = "model.model"
    levels = _unet_levels(ngf, num_downs)
    for depth, (outer, inner) in enumerate(levels):
        in_ch = 3 if depth == 0 else outer
        down, up, sub = (0, 3, 1) if depth == 0 else ((1, 3, None) if depth == num_downs - 1 else (1, 5, 3))
        up_in = inner if depth == num_downs - 1 else 2 * inner
        _conv(s, f"{prefix}.{down}", inner, in_ch, 4, g)
        s[f"{prefix}.{up}.weight"] = torch.randn(up_in, outer, 4, 4, generator=g) * 0.2
        s[f"{prefix}.{up}.bias"] = torch.randn(outer, generator=g) * 0.1
        prefix = f"{prefix}.{sub}.model" if sub is not None else prefix
    return s


def unet_reference_forward(s, x, num_downs):
    def level(x, prefix, depth):
        if depth == 0:
            h = F.conv2d(x, s[f"{prefix}.0.weight"], s[f"{prefix}.0.bias"], stride=2, padding=1)
            h = level(h, f"{prefix}.1.model", 1)
            return torch.tanh(F.conv_transpose2d(F.relu(h), s[f"{prefix}.3.weight"], s[f"{prefix}.3.bias"],
                                                 stride=2, padding=1))
        h = F.conv2d(F.leaky_relu(x, 0.2), s[f"{prefix}.1.weight"], s[f"{prefix}.1.bias"], stride=2, padding=1)
        if depth == num_downs - 1:
            up = "3"
        else:
            h = level(F.instance_norm(h), f"{prefix}.3.model", depth + 1)
            up = "5"
        h = F.instance_norm(F.conv_transpose2d(F.relu(h), s[f"{prefix}.{up}.weight"], s[f"{prefix}.{up}.bias"],
                                               stride=2, padding=1))
        return torch.cat([x, h], 1)

    return level(x, "model.model", 0)


def save_pth(state, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# --- layout inference ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,kwargs,expected", [
    ("resnet", {"n_blocks": 6}, ("resnet_6blocks", 4, False)),
    ("resnet", {"n_blocks": 9, "dropout": True}, ("resnet_9blocks", 4, True)),
    ("resnet", {"n_blocks": 9, "stray_stats": True}, ("resnet_9blocks", 4, False)),
    ("resnet", {"n_blocks": 6, "ngf": 8, "dropout": True, "stray_stats": True}, ("resnet_6blocks", 8, True)),
    ("unet", {"num_downs": 7}, ("unet_128", 2, False)),
    ("unet", {"num_downs": 8, "ngf": 3}, ("unet_256", 3, False)),
])
def test_layout_is_inferred_from_keys_and_shapes(kind, kwargs, expected):
    state = resnet_reference_state(**kwargs) if kind == "resnet" else unet_reference_state(**kwargs)
    model_cfg, converted = reference.convert(state, "G.pth")
    assert (model_cfg.generator, model_cfg.ngf, model_cfg.dropout, model_cfg.norm) == (*expected, "instance")
    assert not [k for k in converted if k.rsplit(".", 1)[-1] in reference.NORM_STATS]  # stray stats dropped
    assert len(converted) == len([k for k in state if k.rsplit(".", 1)[-1] not in reference.NORM_STATS])


@pytest.mark.parametrize("mutate,message", [
    (lambda s: {"encoder.weight": torch.zeros(3, 3)}, "found 1 tensors (encoder.weight (3, 3))"),
    (lambda s: {k: v for k, v in s.items() if not k.startswith("model.15.")}, "5 residual blocks"),
    (lambda s: {**s, "model.2.weight": torch.ones(4), "model.2.bias": torch.zeros(4)}, "batch norm"),
    (lambda s: {**s, "model.1.weight": torch.zeros(4, 1, 7, 7)}, "1-channel input"),
    (lambda s: {**s, "model.10.conv_block.5.weight": torch.zeros(16, 16, 1, 1)},
     "wrong shape model.10.block.5.weight (16, 16, 1, 1) (expected (16, 16, 3, 3))"),
    (lambda s: {k: v for k, v in s.items() if k != "model.19.bias"}, "missing model.19.bias"),
])
def test_unknown_layouts_are_one_clear_line(mutate, message):
    with pytest.raises(CheckpointError) as err:
        reference.convert(mutate(resnet_reference_state()), "G.pth")
    assert message in str(err.value) and str(err.value).startswith("G.pth: ") and "\n" not in str(err.value)


# --- parity with the reference forward -------------------------------------------------------------------

@pytest.mark.parametrize("kind,kwargs,size", [
    ("resnet", {"n_blocks": 6, "stray_stats": True}, (36, 44)),
    ("resnet", {"n_blocks": 9, "dropout": True}, (32, 28)),
    ("unet", {"num_downs": 7}, (128, 128)),
    ("unet", {"num_downs": 8}, (256, 256)),
])
def test_imported_generator_translates_as_the_reference_does(tmp_path, kind, kwargs, size):
    state = resnet_reference_state(**kwargs) if kind == "resnet" else unet_reference_state(**kwargs)
    path = save_pth(state, tmp_path / "latest_net_G.pth")
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = (resnet_reference_forward(state, x, kwargs["n_blocks"]) if kind == "resnet"
                    else unet_reference_forward(state, x, kwargs["num_downs"]))
        net, meta = load_generator(path)
        got = net(x)
    assert got.shape == expected.shape == (2, 3, *size)
    # 1e-5: on CPU the ResNet runs channels_last, whose kernels sum in another order than NCHW ones
    assert (got - expected).abs().max().item() < 1e-5
    assert expected.std() > 0.05  # a non-trivial function: the comparison can fail
    assert meta["source"]["a2b"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# --- files that must not load ----------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "latest_net_G.pth"
    path.parent.mkdir()
    torch.save({"model.1.weight": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="references code .*system.*nothing in it was run"):
        reference.read_state_dict(path)
    code = main(["translate", "--checkpoint", str(path), "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "refused and nothing in it was run" in err and len(err.strip().splitlines()) == 1
    # the reference folder form goes through the same vetting
    assert main(["translate", "--checkpoint", str(path.parent), "--input", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    assert not marker.exists()


def test_non_state_dict_files_are_refused(tmp_path):
    path = tmp_path / "G.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a generator state_dict"):
        load_generator(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="is not a readable torch file"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="reference generator file not found"):
        load_generator(tmp_path / "missing_net_G.pth")


# --- pairs, folders, import, every command -----------------------------------------------------------------

def test_pairs_and_reference_folders(tmp_path):
    folder = tmp_path / "checkpoints" / "horse2zebra"
    g_a = save_pth(resnet_reference_state(seed=1), folder / "latest_net_G_A.pth")
    g_b = save_pth(resnet_reference_state(seed=2), folder / "latest_net_G_B.pth")
    save_pth(resnet_reference_state(seed=3), folder / "5_net_G_A.pth")  # an older epoch: not chosen
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for source in ({"path": folder}, {"path": g_a, "path_b": g_b}):
        loaded = load_generators(**source)
        assert set(loaded) == {"a2b", "b2a"}
        with torch.no_grad():
            for direction, file in (("a2b", g_a), ("b2a", g_b)):
                want = resnet_reference_forward(torch.load(file), x, 6)
                assert (loaded[direction][0](x) - want).abs().max() < 1e-5  # channels_last: another sum order
    with pytest.raises(CheckpointError, match="holds only the a2b generator.*--checkpoint-b G_B.pth"):
        load_generator(g_a, "b2a")
    save_pth(unet_reference_state(), tmp_path / "unet_net_G_B.pth")
    with pytest.raises(CheckpointError, match="is resnet_6blocks .* is unet_128 .*import them separately"):
        load_generators(g_a, tmp_path / "unet_net_G_B.pth")
    with pytest.raises(CheckpointError, match="--checkpoint-b .* pairs with a reference generator"):
        load_generators(tmp_path / "nothing.safetensors", g_b)


def test_import_then_every_command(tmp_path, capsys):
    """`cyclestyle import` writes a normal generators file; translate, export and the web demo's loader take
    it, and translate takes the .pth directly."""
    g_a = save_pth(resnet_reference_state(seed=1, stray_stats=True), tmp_path / "ref" / "latest_net_G_A.pth")
    g_b = save_pth(resnet_reference_state(seed=2), tmp_path / "ref" / "latest_net_G_B.pth")
    out = tmp_path / "imported.safetensors"
    assert main(["import", "--checkpoint", str(g_a), "--checkpoint-b", str(g_b), "--output", str(out)]) == 0
    assert f"wrote {out}: resnet_6blocks, ngf 4, directions a2b and b2a" in capsys.readouterr().out
    weights, meta = read_generators(out)
    assert set(weights) == {"gen_ab", "gen_ba"} and meta["imported_from"] == reference.REFERENCE_REPO
    assert meta["source"]["b2a"] == {"file": str(g_b), "sha256": hashlib.sha256(g_b.read_bytes()).hexdigest()}

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, size in enumerate([(40, 30), (33, 47)]):
        Image.effect_noise(size, 60 + i).convert("RGB").save(photos / f"p{i}.png")
    for ckpt in (["--checkpoint", str(out), "--direction", "b2a"], ["--checkpoint", str(g_a), "--checkpoint-b",
                                                                      str(g_b), "--direction", "b2a"]):
        target = tmp_path / f"out{len(ckpt)}"
        assert main(["translate", *ckpt, "--input", str(photos), "--output", str(target), "--precision", "fp32"]) == 0
        assert [Image.open(target / f"p{i}.png").size for i in range(2)] == [(40, 30), (33, 47)]
    assert (Image.open(tmp_path / "out4" / "p0.png").tobytes() == Image.open(tmp_path / "out6" / "p0.png").tobytes())
    # the closing note's command: a bare reference file, one direction
    assert main(["translate", "--checkpoint", str(g_a), "--input", str(photos), "--output", str(tmp_path / "o1"),
                 "--precision", "fp32"]) == 0
    assert main(["translate", "--checkpoint", str(g_a), "--input", str(photos), "--output", str(tmp_path / "o2"),
                 "--direction", "b2a"]) == 2
    assert "holds only the a2b generator" in capsys.readouterr().err

    assert main(["gallery", "--checkpoint", str(g_a), "--checkpoint-b", str(g_b), "--direction", "b2a",
                 "--reconstruction", "--input", str(photos), "--output", str(tmp_path / "gallery")]) == 0
    assert "latest_net_G_A" in (tmp_path / "gallery" / "index.html").read_text()

    script = tmp_path / "g.pt"
    assert main(["export", "--checkpoint", str(out), "--format", "torchscript", "--output", str(script),
                 "--direction", "b2a"]) == 0
    x = torch.rand(1, 3, 32, 36) * 2 - 1
    with torch.no_grad():
        assert (torch.jit.load(str(script))(x) - resnet_reference_forward(torch.load(g_b), x, 6)).abs().max() < 1e-5
    assert set(Translator.load_all(g_a)) == {"a2b"}  # the web demo then offers a2b only
    assert json.loads(json.dumps(meta["model"]))["generator"] == "resnet_6blocks"


def test_web_demo_offers_the_directions_a_file_holds(tmp_path):
    serve = pytest.importorskip("cyclestyle.serve")
    g_a = save_pth(resnet_reference_state(seed=1), tmp_path / "latest_net_G_A.pth")
    demo = serve.Demo(g_a, device="cpu", results_dir=tmp_path / "results")
    assert set(demo.translators) == {"a2b"}
    photo = Image.effect_noise((48, 40), 50).convert("RGB")
    assert demo.translate_image(photo, "a2b", 64).size == (48, 40)
    with pytest.raises(serve.UploadError, match="Unknown direction 'b2a': choose a2b"):
        demo.translate_image(photo, "b2a", 64)
    g_b = save_pth(resnet_reference_state(seed=2), tmp_path / "latest_net_G_B.pth")
    both = serve.Demo(g_a, device="cpu", results_dir=tmp_path / "r2", checkpoint_b=g_b)
    assert set(both.translators) == {"a2b", "b2a"} and not both.styled
    with pytest.raises(serve.UploadError, match="does not take a style painting"):
        both.translate_image(photo, "a2b", 64, style=photo)


def test_norm_none_files_have_no_conv_bias():
    """The reference gives convs a bias only with instance norm: a file without biases is --norm none."""
    state = {k: v for k, v in resnet_reference_state().items() if not k.endswith(".bias") or k == "model.23.bias"}
    model_cfg, converted = reference.convert(state, "G.pth")
    assert model_cfg.norm == "none"
    assert torch.equal(converted["model.1.bias"], torch.zeros(4)) and "model.23.bias" in converted
