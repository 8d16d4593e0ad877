import copy
import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cyclestyle import checkpoint, nets
from cyclestyle.checkpoint import CheckpointError
from cyclestyle.config import ModelConfig
from cyclestyle.data import pil_to_tensor
from cyclestyle.translate import Translator, load_generator
from tests.conftest import cpu_flags_say_native_bf16

ROOT = Path(__file__).resolve().parents[1]


def make_export(path, ngf=4, seed=0, gain=0.3):
    torch.manual_seed(seed)
    cfg = ModelConfig(generator="resnet_6blocks", ngf=ngf, init_gain=gain)  # gain: a non-trivial random net
    gens = {"gen_ab": nets.build_generator(cfg), "gen_ba": nets.build_generator(cfg)}
    return checkpoint.save_generators(path, gens, dataclasses.asdict(cfg), step=7, ema=False), gens


@pytest.fixture
def export(tmp_path):
    return make_export(tmp_path / "run" / "generators" / "last.safetensors")


def smooth_image(w, h, seed=0):
    """A photo-like image: smooth gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + 20
    return Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))


def test_pil_in_pil_out_same_size_and_direction(export, tmp_path):
    path, gens = export
    t = Translator.load(tmp_path / "run", direction="b2a", device="cpu")
    assert t.meta["step"] == "7"
    out = t(smooth_image(37, 23))  # odd, non-square: padded for the network, cropped back
    assert out.size == (37, 23) and out.mode == "RGB"
    x = pil_to_tensor(smooth_image(36, 24))
    with torch.no_grad():
        expected = gens["gen_ba"](x)
    # tensors in, tensors out, the b2a generator; 5e-5: its channels_last weights sum in another order
    assert torch.allclose(t(x), expected, atol=5e-5)


def test_auto_precision_is_bf16_where_native(export, tmp_path):
    expected = "bf16" if cpu_flags_say_native_bf16() else "fp32"
    auto = Translator.load(tmp_path / "run", device="cpu", precision="auto")
    explicit = Translator.load(tmp_path / "run", device="cpu", precision=expected)
    assert auto.precision == expected
    assert np.array_equal(np.asarray(auto(smooth_image(48, 32))), np.asarray(explicit(smooth_image(48, 32))))
    with pytest.raises(ValueError, match="precision must be auto, fp32, bf16 or fp16"):
        Translator.load(tmp_path / "run", device="cpu", precision="int8")


def test_folder_translation_names_sizes_modes_and_bad_files(export, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    smooth_image(40, 24).save(src / "wide.jpg")
    smooth_image(24, 40).convert("L").save(src / "sub" / "tall_gray.png")
    smooth_image(30, 30).convert("RGBA").save(src / "rgba.png")
    smooth_image(30, 30).convert("CMYK").save(src / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    smooth_image(40, 20).save(src / "rotated.jpg", exif=exif)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    buf = io.BytesIO()
    smooth_image(64, 64).save(buf, "PNG")
    (src / "truncated.png").write_bytes(buf.getvalue()[:200])
    (src / "notes.txt").write_text("not an image, not even listed")
    t = Translator.load(export[0], device="cpu")
    with pytest.warns(UserWarning):
        summary = t.translate_folder(src, tmp_path / "out", batch_size=4)
    assert summary.n_done == 5 and len(summary.skipped) == 2
    assert {p.name for p, _ in summary.skipped} == {"broken.jpg", "truncated.png"}
    sizes = {str(p.relative_to(tmp_path / "out")): Image.open(p).size for p in (tmp_path / "out").rglob("*.png")}
    assert sizes == {"wide.png": (40, 24), "sub/tall_gray.png": (24, 40), "rgba.png": (30, 30),
                     "cmyk.png": (30, 30), "rotated.png": (20, 40)}  # EXIF rotation applied
    again = t.translate_folder(src, tmp_path / "out")  # existing outputs are skipped ...
    assert again.n_done == 0 and again.n_existing == 5
    assert t.translate_folder(src, tmp_path / "out", overwrite=True).n_done == 5  # ... unless asked
    same = t.translate_folder(src, src)  # never overwrite an input
    assert any("would overwrite an input" in why for _, why in same.skipped)
    assert Image.open(src / "rgba.png").mode == "RGBA"


def test_batches_of_mixed_sizes_equal_one_by_one(export, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, (w, h) in enumerate([(32, 32), (32, 32), (40, 28), (32, 32)]):
        smooth_image(w, h, seed=i).save(src / f"{i}.png")
    t = Translator.load(export[0], device="cpu")
    t.translate_folder(src, tmp_path / "batched", batch_size=3)
    t.translate_folder(src, tmp_path / "single", batch_size=1)
    for i in range(4):
        a = np.asarray(Image.open(tmp_path / "batched" / f"{i}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "single" / f"{i}.png")).astype(int)
        assert np.abs(a - b).max() <= 1


def test_resize_options(export, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    smooth_image(80, 40).save(src / "x.png")
    t = Translator.load(export[0], device="cpu")
    t.translate_folder(src, tmp_path / "size", size=20)
    t.translate_folder(src, tmp_path / "max", max_size=60)
    assert Image.open(tmp_path / "size" / "x.png").size == (40, 20)
    assert Image.open(tmp_path / "max" / "x.png").size == (60, 30)


def test_tiled_close_to_whole_image(tmp_path):
    """Tiles with the whole image's instance-norm statistics, blended: close to translating it whole."""
    path, _ = make_export(tmp_path / "g.safetensors", gain=0.02)  # the default init's output scale
    t = Translator.load(path, device="cpu")
    x = pil_to_tensor(smooth_image(256, 192, seed=3))
    whole = t.translate_tensor(x)
    tiled = t.translate_tiled(x, tile=128, overlap=48)
    diff = (whole - tiled).abs() * 127.5  # in 8-bit grey levels
    # measured: mean 0.42, max 9.2 grey levels (random ResNet-6, 128 px tiles, 48 px overlap; the
    # remaining error is the receptive field reaching past tile borders)
    assert diff.mean() < 1.0 and diff.max() < 16
    naive = torch.cat([torch.cat([t.translate_tensor(x[..., r:r + 96, c:c + 128]) for c in (0, 128)], -1)
                       for r in (0, 96)], -2)  # per-tile statistics, as plain tiling would do
    assert (whole - naive).abs().mean() * 127.5 > 3 * diff.mean()


def test_huge_images_refused_untiled_and_processed_tiled(export, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    smooth_image(64, 48).save(src / "big.png")
    t = Translator.load(export[0], device="cpu")
    with pytest.warns(UserWarning, match="use --tile"):
        refused = t.translate_folder(src, tmp_path / "a", max_pixels=1000)
    assert refused.n_done == 0 and "--tile" in refused.skipped[0][1]
    done = t.translate_folder(src, tmp_path / "b", max_pixels=1000, tile=32, overlap=8)
    assert done.n_done == 1 and Image.open(tmp_path / "b" / "big.png").size == (64, 48)


def test_bad_checkpoints_are_one_clear_error(tmp_path, export):
    with pytest.raises(CheckpointError, match="has no generators file"):
        Translator.load(tmp_path)
    pickle_file = tmp_path / "evil.safetensors"
    torch.save({"x": 1}, pickle_file)  # a pickle posing as an export is never unpickled
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_generator(pickle_file)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError, match="not a cyclestyle generators file"):
        load_generator(other)
    weights, meta = checkpoint.read_generators(export[0])
    mismatched = tmp_path / "mismatch.safetensors"
    bigger = dict(meta["model"], ngf=8)
    checkpoint.save_generators(mismatched, {"gen_ab": nets.build_generator(ModelConfig(**meta["model"]))},
                                 bigger, 0, False)
    with pytest.raises(CheckpointError, match="do not match the model config"):
        load_generator(mismatched)


def test_cli_matches_api_pixels_and_reports(export, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    smooth_image(44, 28).save(src / "p.jpg")
    (src / "bad.png").write_text("nope")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "translate.py"), "--checkpoint",
                           str(tmp_path / "run"), "--input", str(src), "--output", str(tmp_path / "cli"),
                           "--format", "png", "--device", "cpu"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "translated 1 image(s)" in done.stdout and "skipped 1 file(s)" in done.stderr and "bad.png" in done.stderr
    api = Translator.load(tmp_path / "run", device="cpu", precision="auto")(Image.open(src / "p.jpg"))  # CLI default
    assert np.array_equal(np.asarray(api), np.asarray(Image.open(tmp_path / "cli" / "p.png")))
    missing = subprocess.run([sys.executable, "-m", "cyclestyle", "translate", "--checkpoint", str(tmp_path / "x.st"),
                              "--input", str(src), "--output", str(tmp_path / "o")], capture_output=True, text=True,
                             env=env)
    assert missing.returncode == 2 and "generators file not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_bf16_translation_close_to_fp32(export):
    x = pil_to_tensor(smooth_image(32, 32))
    fp32 = Translator.load(export[0], device="cpu")(x)
    bf16 = Translator.load(export[0], device="cpu", precision="bf16")(x)
    assert (fp32 - bf16).abs().mean() < 0.05


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch_on_non_square_input(export, tmp_path, fmt):
    from cyclestyle.export import export_model

    out = export_model(tmp_path / "run", tmp_path / f"g.{fmt}", fmt, example_size=(32, 32))
    x = pil_to_tensor(smooth_image(52, 36))  # another shape than the export example: dynamic axes
    with torch.no_grad():
        expected = export[1]["gen_ab"](x)
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x)
    else:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)  # measured max |diff|: ~1e-6


def test_exports_from_before_the_upsample_key_load_as_transposed_convs(tmp_path):
    """Exports written before model.upsample existed have no such key: they used transposed convs."""
    torch.manual_seed(0)
    cfg = ModelConfig(generator="resnet_6blocks", ngf=4, upsample="deconv", init_gain=0.3)
    gens = {"gen_ab": nets.build_generator(cfg), "gen_ba": nets.build_generator(cfg)}
    legacy = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "upsample"}
    path = checkpoint.save_generators(tmp_path / "old.safetensors", gens, legacy, step=3, ema=False)
    net, meta = load_generator(path, "a2b")
    assert "upsample" not in meta["model"]
    x = torch.rand(1, 3, 20, 28) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), gens["gen_ab"].eval()(x))


def test_bf16_translation_holds_bf16_weights_and_gives_autocasts_bits():
    """On CPU a bf16 translator converts its generator's weights once instead of autocast casting them on every
    call; the translations are the same bits as autocast over the fp32 weights."""
    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=8))
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = net.eval()(x).float()
    t = Translator(copy.deepcopy(net), 4, "cpu", "bf16")
    assert {p.dtype for p in t.generator.parameters()} == {torch.bfloat16}
    got = t.translate_tensor(x)
    assert got.dtype == torch.float32 and torch.equal(got, expected.clamp(-1, 1))
    assert (got - Translator(net, 4, "cpu", "fp32").translate_tensor(x)).abs().max() > 0  # bf16 is not fp32


@pytest.mark.parametrize("generator", ["unet_128", "resnet_6blocks"])
def test_cpu_translator_holds_channels_last_weights_with_the_same_translation(generator):
    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator=generator, ngf=4))
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        expected = net.eval()(x).clamp(-1, 1)
    t = Translator(copy.deepcopy(net), 4, "cpu", "fp32")
    convs = [m.weight for m in t.generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    torch.testing.assert_close(t.translate_tensor(x), expected, rtol=0, atol=1e-5)
