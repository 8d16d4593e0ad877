"""Style-coded generators (model.style_code=learned): the code steers the output, one code tiles like the whole
image, the mean code is the default everywhere, and translate takes --style-image / --style-folder."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle import checkpoint, nets
from cyclestyle.cli import main
from cyclestyle.config import ConfigError, ModelConfig
from cyclestyle.data import pil_to_tensor
from cyclestyle.translate import NO_CODES, Translator, load_generator
from tests.test_translate import smooth_image


def coded_generator(seed=0, generator="resnet_6blocks", ngf=4, code="learned"):
    """A style-coded generator whose FiLM layers are random (a fresh one starts as the identity) and whose
    mean code is set, as after training."""
    torch.manual_seed(seed)
    cfg = ModelConfig(generator=generator, ngf=ngf, style_code=code, init_gain=0.02)
    net = nets.build_generator(cfg)
    for film in net.films():
        torch.nn.init.normal_(film.weight, 0, 0.3)
    net.track_mean(torch.randn(3, cfg.style_dim))
    return net.eval(), cfg


def coded_export(path, seed=0, code="learned"):
    gen_ab, cfg = coded_generator(seed, code=code)
    gen_ba, _ = coded_generator(seed + 1, code=code)
    return checkpoint.save_generators(path, {"gen_ab": gen_ab, "gen_ba": gen_ba}, dataclasses.asdict(cfg), step=3,
                                      ema=False, extra={"crop_size": 32})


@pytest.mark.parametrize("code", ["learned", "vgg"])
def test_the_code_steers_the_output_and_the_mean_code_is_the_default(code):
    net, cfg = coded_generator(code=code)
    x = torch.rand(2, 3, 32, 36) * 2 - 1
    style = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        codes = net(style, encode_only=True)
        assert codes.shape == (2, cfg.style_dim)
        assert torch.allclose(codes.norm(dim=1), torch.full((2,), cfg.style_dim ** 0.5))
        a, b = net(x, style=codes[:1]), net(x, style=codes[1:])
        assert (a - b).abs().mean() > 1e-3  # another code, another output
        assert torch.equal(net(x, style=style), net(x, style=codes))  # images are encoded in the forward
        assert torch.equal(net(x), net(x, style=net.mean_code[None]))
    fresh = nets.build_generator(cfg)
    with torch.no_grad():  # zero-initialised FiLM: an untrained coded generator ignores the code
        assert torch.equal(fresh(x, style=codes[:1]), fresh(x, style=codes[1:]))
    assert nets.build_generator(ModelConfig(generator="unet_128", ngf=2, style_code=code)).films()


@pytest.mark.parametrize("code", ["learned", "vgg"])
def test_one_code_tiles_like_the_whole_image(tmp_path, code):
    t = Translator.load(coded_export(tmp_path / "g.safetensors", code=code), device="cpu")
    x = pil_to_tensor(smooth_image(256, 192, seed=3))
    code = t.style_code(Image.effect_noise((48, 48), 80).convert("RGB"))
    whole = t.translate_tensor(x, code)
    tiled = t.translate_tiled(x, tile=128, overlap=48, code=code)
    diff = (whole - tiled).abs() * 127.5
    assert diff.mean() < 1.0 and diff.max() < 16  # the tolerance of plain models' tiling (test_translate)
    other = t.translate_tiled(x, tile=128, overlap=48, code=-code)
    assert (other - tiled).abs().mean() * 127.5 > 4 * diff.mean()  # the code matters more than the tiling


def test_translate_with_style_image_folder_and_mean(tmp_path, capsys):
    export = coded_export(tmp_path / "run" / "generators" / "last.safetensors")
    photos, styles = tmp_path / "photos", tmp_path / "styles"
    photos.mkdir()
    styles.mkdir()
    smooth_image(40, 32, seed=1).save(photos / "p.png")
    for i, name in enumerate(("water_lilies", "haystacks")):
        Image.effect_noise((36, 36), 30 + 60 * i).convert("RGB").save(styles / f"{name}.png")
    run = ["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(photos), "--precision", "fp32"]
    assert main([*run, "--output", str(tmp_path / "plain")]) == 0
    assert main([*run, "--output", str(tmp_path / "one"), "--style-image", str(styles / "haystacks.png")]) == 0
    assert main([*run, "--output", str(tmp_path / "each"), "--style-folder", str(styles)]) == 0
    assert main([*run, "--output", str(tmp_path / "mean"), "--style-folder", str(styles), "--style-mean"]) == 0

    def pixels(image):
        return torch.from_numpy(np.asarray(Image.open(image) if not isinstance(image, Image.Image) else image,
                                           dtype=np.float32))

    one, each = pixels(tmp_path / "one" / "p.png"), pixels(tmp_path / "each" / "haystacks" / "p.png")
    lilies, mean = pixels(tmp_path / "each" / "water_lilies" / "p.png"), pixels(tmp_path / "mean" / "p.png")
    assert torch.equal(one, each)  # the same painting, the same code
    assert (lilies - each).abs().mean() > 1 and (mean - each).abs().mean() > 0.1
    t = Translator.load(export, device="cpu")
    photo = Image.open(photos / "p.png")
    assert torch.equal(pixels(tmp_path / "plain" / "p.png"), pixels(t(photo)))
    assert torch.equal(one, pixels(t(photo, style=Image.open(styles / "haystacks.png"))))
    capsys.readouterr()
    assert main([*run, "--output", str(tmp_path / "x"), "--style-image", str(styles / "missing.png")]) == 2
    assert "--style-image" in capsys.readouterr().err
    assert main([*run, "--output", str(tmp_path / "x"), "--style-mean"]) == 2
    assert "--style-mean needs --style-folder" in capsys.readouterr().err
    # gallery: photos x styles
    assert main(["gallery", "--checkpoint", str(tmp_path / "run"), "--input", str(photos), "--output",
                 str(tmp_path / "gallery"), "--style-image", str(styles / "water_lilies.png"), "--style-image",
                 str(styles / "haystacks.png"), "--reconstruction"]) == 0
    page = (tmp_path / "gallery" / "index.html").read_text()
    assert "(a2b, style water_lilies)" in page and "(a2b, style haystacks then b2a)" in page
    assert torch.equal(pixels(tmp_path / "gallery" / "full" / "000" / "ckpt-0-style1.png"), one)


def test_style_strength_dials_from_the_mean_style_to_the_painting_and_beyond(tmp_path, capsys):
    export = coded_export(tmp_path / "run" / "generators" / "last.safetensors")
    t = Translator.load(export, device="cpu")
    photo, painting = smooth_image(40, 32, seed=1), Image.effect_noise((36, 36), 90).convert("RGB")
    mean, code = t.generator.mean_code[None], t.style_code(painting)
    assert torch.equal(t.style_code(painting, strength=0), mean)
    assert torch.allclose(t.style_code(painting, strength=2), 2 * code - mean)
    assert torch.allclose(t.style_code(painting, strength=0.5), (code + mean) / 2)
    pixels = lambda image: np.asarray(image, dtype=np.float32)  # noqa: E731
    half, full = pixels(t(photo, style=painting, strength=0.5)), pixels(t(photo, style=painting))
    assert np.array_equal(pixels(t(photo, style=painting, strength=0)), pixels(t(photo)))
    assert np.abs(half - full).mean() > 0.1 and np.abs(half - pixels(t(photo))).mean() > 0.1
    with pytest.raises(ValueError, match="strength must be a number >= 0"):
        t.style_code(painting, strength=-1)

    photo.save(tmp_path / "p.png")
    painting.save(tmp_path / "s.png")
    run = ["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "p.png"),
           "--precision", "fp32"]
    assert main([*run, "--output", str(tmp_path / "zero"), "--style-image", str(tmp_path / "s.png"),
                 "--style-strength", "0"]) == 0
    assert main([*run, "--output", str(tmp_path / "half"), "--style-image", str(tmp_path / "s.png"),
                 "--style-strength", "0.5"]) == 0
    assert np.array_equal(pixels(Image.open(tmp_path / "zero" / "p.png")), pixels(t(photo)))
    assert np.array_equal(pixels(Image.open(tmp_path / "half" / "p.png")), half)
    capsys.readouterr()
    assert main([*run, "--output", str(tmp_path / "x"), "--style-strength", "0.5"]) == 2
    assert "--style-strength needs --style-image" in capsys.readouterr().err
    for bad in ("-1", "nan"):
        assert main([*run, "--output", str(tmp_path / "x"), "--style-image", str(tmp_path / "s.png"),
                     "--style-strength", bad]) == 2
        assert "--style-strength must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # gallery: one column per painting and strength
    (tmp_path / "photos").mkdir()
    photo.save(tmp_path / "photos" / "p.png")
    gallery = ["gallery", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "photos"), "--output",
               str(tmp_path / "g")]
    assert main([*gallery, "--style-image", str(tmp_path / "s.png"), "--style-strength", "0",
                 "--style-strength", "0.5"]) == 0
    assert "(a2b, style s at 0.5)" in (tmp_path / "g" / "index.html").read_text()
    row = tmp_path / "g" / "full" / "000"
    assert sorted(c.name for c in row.glob("ckpt-0-*")) == ["ckpt-0-style0-s0.png", "ckpt-0-style0-s1.png"]
    assert np.array_equal(pixels(Image.open(row / "ckpt-0-style0-s0.png")), pixels(t(photo)))
    assert np.array_equal(pixels(Image.open(row / "ckpt-0-style0-s1.png")), half)
    assert main([*gallery, "--style-strength", "0.5"]) == 2
    assert "--style-strength needs --style-image" in capsys.readouterr().err


def test_a_plain_model_refuses_a_style_image(tmp_path, capsys):
    from tests.test_translate import make_export

    path, _ = make_export(tmp_path / "plain.safetensors")
    Image.effect_noise((36, 36), 30).convert("RGB").save(tmp_path / "s.png")
    smooth_image(40, 32).save(tmp_path / "p.png")
    assert main(["translate", "--checkpoint", str(path), "--input", str(tmp_path / "p.png"), "--output",
                 str(tmp_path / "o"), "--style-image", str(tmp_path / "s.png")]) == 2
    assert NO_CODES in capsys.readouterr().err
    with pytest.raises(checkpoint.CheckpointError, match="has no style codes"):
        Translator.load(path)(Image.open(tmp_path / "p.png"), style=Image.open(tmp_path / "s.png"))


def test_style_reference_does_not_apply_to_a_coded_model(tiny_cfg, tmp_path):
    Image.effect_noise((36, 36), 30).convert("RGB").save(tmp_path / "s.png")
    with pytest.raises(ConfigError, match="loss.style_reference.*does not apply to a style-coded model"):
        tiny_cfg("model.style_code=learned", "loss.style_ab=1", f"loss.style_reference={tmp_path / 's.png'}")


def test_coded_training_learns_codes_and_tracks_the_mean(tiny_cfg):
    from cyclestyle.training import train

    result = train(tiny_cfg("model.style_code=learned", "loss.style_ab=1", "loss.vgg_weights=random",
                            "train.steps=1", "train.decay_steps=0"))
    gen = result.generators["gen_ab"]
    assert nets.is_styled(gen) and int(gen.code_count) == 1 and gen.mean_code.abs().sum() > 0
    assert {"code_ab", "code_ba", "style_ab"} <= set(result.losses)
    assert any(film.weight.abs().sum() > 0 for film in gen.films())  # the modulation was trained
    t = Translator.load(result.run_dir, device="cpu")
    assert t.styled and t.style_size == 32 and torch.equal(t.generator.mean_code, gen.mean_code)


def test_vgg_codes_train_the_mapping_and_keep_the_loaded_vgg(tiny_cfg, tmp_path):
    """model.style_code=vgg: the encoder's VGG is the one loss.vgg_weights names, stays fixed in training and is
    saved with the generator (a loaded export encodes with it, no weights option needed); the mapping trains."""
    from cyclestyle.training import train
    from cyclestyle.vgg import load_vgg19_features

    torch.manual_seed(5)
    torch.save(load_vgg19_features("random").state_dict(), tmp_path / "vgg.pth")
    result = train(tiny_cfg("model.style_code=vgg", f"loss.vgg_weights={tmp_path / 'vgg.pth'}", "train.steps=2"))
    file = torch.load(tmp_path / "vgg.pth")
    fresh = nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=8, style_code="vgg"))  # random VGG
    for name in ("gen_ab", "gen_ba"):
        encoder = result.generators[name].encoder
        assert isinstance(encoder, nets.VGGStyleEncoder)
        for key, value in encoder.vgg.features.state_dict().items():
            assert torch.equal(value, file[key]), key  # loaded, then untouched by two Adam steps
        assert not torch.equal(encoder.head[0].weight, fresh.encoder.head[0].weight)
    t = Translator.load(result.run_dir, device="cpu")
    style = torch.rand(1, 3, 32, 32) * 2 - 1
    trained = result.generators["gen_ab"].eval()
    with torch.no_grad():
        torch.testing.assert_close(t.style_code(style), trained(style, encode_only=True))
        assert not torch.allclose(fresh(style, encode_only=True), trained(style, encode_only=True), atol=1e-3)


def test_vgg_codes_without_the_weights_fail_with_what_to_do(tmp_path, capsys, folders):
    """model.style_code=vgg with loss.vgg_weights missing: `cyclestyle train` exits 2 naming the setting, the
    file to fetch and the alternative (learned codes) before the first step; it never uses random weights."""
    from tests.conftest import tiny_overrides

    missing = tmp_path / "missing.pth"
    assert main(["train", *tiny_overrides(folders, tmp_path / "run", "model.style_code=vgg",
                                          f"loss.vgg_weights={missing}")]) == 2
    err = capsys.readouterr().err
    assert "needed by model.style_code=vgg" in err and f"file not found: {missing}" in err
    assert "vgg19-dcbb9e9d.pth" in err and "or use model.style_code=learned" in err and "Traceback" not in err
    assert not list((tmp_path / "run").rglob("step-*"))


def test_vgg_codes_are_the_mapped_mean_and_spread_of_vgg_features():
    from cyclestyle.vgg import VGGFeatures

    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=4, style_code="vgg"))
    vgg = VGGFeatures("random", ("relu1_1", "relu2_1", "relu3_1"))
    vgg.load_state_dict(net.encoder.vgg.state_dict())
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    with torch.no_grad():
        # per layer: the channels' means, then their spreads (a dead ReLU channel: sqrt(eps), not 0)
        stats = torch.cat([torch.cat([f.mean((2, 3)), (f.var((2, 3), correction=0) + 1e-5).sqrt()], 1)
                           for f in vgg(x).values()], 1)
        assert stats.shape == (2, 2 * (64 + 128 + 256))
        torch.testing.assert_close(net.encoder.statistics(x), stats, atol=1e-5, rtol=1e-4)
        code = torch.nn.functional.normalize(net.encoder.head(stats), dim=1) * 8 ** 0.5
        torch.testing.assert_close(net(x, encode_only=True), code, atol=1e-4, rtol=1e-4)


def test_multi_painter_benchmark_layout_and_scores(tmp_path, capsys):
    pytest.importorskip("skimage", reason="the quality benchmark needs scikit-image (dev extra)")
    from cyclestyle import quality, quality_styles

    data = tmp_path / "data"
    manifest = quality_styles.build(data, size=32, n_train=6, n_test=2)
    painted = sorted(p.name.split("__")[0] for p in (data / "trainB").glob("*.png"))
    assert painted == sorted(["colour", "oil", "ink"] * 2)  # the painters in turn
    for painter in manifest["painters"]:
        ref = data / "references" / f"{painter}.png"
        # the reference is that painter's painting of a B crop (not of any test photo)
        assert ref.is_file() and manifest["references"][painter] not in {p.name for p in (data / "testA").glob("*")}
        for test in (data / "testA").glob("*.png"):
            truth = quality.read_rgb(data / "testA_painted" / painter / test.name)
            assert np.array_equal(truth, quality.paint(quality.read_rgb(test), painter))
    coded_export(tmp_path / "run" / "generators" / "last.safetensors")
    report = quality_styles.score_model(data, tmp_path / "run")
    row = report["painters"]["ink"]
    assert report["styled"] and row["wrong_painter"] == "colour" and row["right"] != row["wrong"]
    assert "| coded | right |" in quality_styles.format_table([{"name": "coded", **report}])
    figure = np.asarray(Image.open(quality_styles.write_figure(data, tmp_path / "run", tmp_path / "f.png")))
    assert figure.shape == (3 * 32, 7 * 32, 3)  # references row + 2 photos; photo, 3 translations, 3 truths

    # at style strength 0 every reference is the mean code; strength 1 is the report's own right / wrong
    dialled = quality_styles.score_model(data, tmp_path / "run", strengths=[0, 1, 2])["painters"]
    for painter, row in dialled.items():
        assert set(row["by_strength"]) == {"0", "2"}
        assert row["by_strength"]["0"] == {"right": row["plain_or_mean"], "wrong": row["plain_or_mean"]}
        assert row["right"] == report["painters"][painter]["right"] != row["by_strength"]["2"]["right"]
    # the same from the command line, on the trained run as it is
    assert quality_styles.main(["--out", str(tmp_path), "--score", str(tmp_path / "run"), "--strength", "0",
                                "--strength", "2"]) == 0
    written = json.loads((tmp_path / "run" / "styles-report.json").read_text())
    assert written["painters"] == json.loads(json.dumps(dialled)) and "cpu" in written["machine"]
    printed = capsys.readouterr().out
    assert "| run | right, strength 2 |" in printed and "run codes: nearest own centroid colour" in printed
    assert set(written["code_separation"]["accuracy"]) == {"colour", "oil", "ink"}
    with pytest.raises(SystemExit):
        quality_styles.main(["--out", str(tmp_path), "--score", str(tmp_path / "missing")])
    assert "--score" in capsys.readouterr().err and not (tmp_path / "missing").exists()


def test_code_separation_says_which_painters_the_codes_tell_apart():
    from cyclestyle.quality_styles import code_separation

    g = torch.Generator().manual_seed(0)
    noise = lambda: 0.1 * torch.randn(50, 4, generator=g)  # noqa: E731
    apart = code_separation({"colour": noise(), "oil": noise() + torch.tensor([3.0, 0, 0, 0]),
                             "ink": noise() + torch.tensor([0, 4.0, 0, 0])})
    assert apart["accuracy"] == {"colour": 1.0, "oil": 1.0, "ink": 1.0}
    assert apart["centroid_distance"]["colour-oil"] == pytest.approx(3.0, abs=0.05)
    assert apart["centroid_distance"]["oil-ink"] == pytest.approx(5.0, abs=0.05)
    assert apart["spread"]["ink"] == pytest.approx(0.1 * math.sqrt(2) * math.gamma(2.5) / math.gamma(2), rel=0.2)
    mixed = code_separation({"colour": noise(), "oil": noise(), "ink": noise() + torch.tensor([0, 4.0, 0, 0])})
    assert mixed["accuracy"]["ink"] == 1.0 and mixed["accuracy"]["colour"] + mixed["accuracy"]["oil"] < 1.5
    assert mixed["centroid_distance"]["colour-oil"] < mixed["spread"]["colour"]


@pytest.mark.parametrize("fmt, code", [("torchscript", "learned"), ("onnx", "learned"), ("onnx", "vgg")])
def test_exports_take_the_code_as_a_second_input(tmp_path, fmt, code):
    import json

    from cyclestyle.export import export_model

    coded_export(tmp_path / "g.safetensors", code=code)
    out = export_model(tmp_path / "g.safetensors", tmp_path / f"g.{fmt}", fmt, example_size=(32, 32))
    t = Translator.load(tmp_path / "g.safetensors", device="cpu")
    x = pil_to_tensor(smooth_image(44, 36))
    codes = t.style_code([Image.effect_noise((36, 36), 30 + 60 * i).convert("RGB") for i in range(2)])
    if fmt == "torchscript":
        files = {"mean_code": ""}
        module = torch.jit.load(str(out), _extra_files=files)
        mean = torch.tensor(json.loads(files["mean_code"]))[None]
        run = lambda image, code: module(image, code)  # noqa: E731
    else:
        ort = pytest.importorskip("onnxruntime")
        import onnx

        mean = torch.tensor(json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["mean_code"]))[None]
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        run = lambda image, code: torch.from_numpy(  # noqa: E731
            session.run(None, {"image": image.numpy(), "code": code.numpy()})[0])
    for code in (codes[:1], codes[1:], mean):
        expected = t.generator(x, style=code)
        assert torch.allclose(run(x, code), expected, atol=1e-4)
    assert (run(x, codes[:1]) - run(x, codes[1:])).abs().mean() > 1e-3
    assert torch.allclose(mean, t.generator.mean_code[None], atol=1e-6)


def test_web_demo_takes_an_optional_style_painting(tmp_path):
    serve = pytest.importorskip("cyclestyle.serve")
    demo = serve.Demo(coded_export(tmp_path / "g.safetensors"), device="cpu", results_dir=tmp_path / "results")
    assert demo.styled
    smooth_image(40, 32).save(tmp_path / "p.png")
    Image.effect_noise((36, 36), 90).convert("RGB").save(tmp_path / "s.png")
    styled = demo.translate_file(tmp_path / "p.png", "a2b", 64, tmp_path / "s.png")
    mean = demo.translate_file(tmp_path / "p.png", "a2b", 64)
    t = Translator.load(tmp_path / "g.safetensors", device="cpu")
    photo, style = Image.open(tmp_path / "p.png"), Image.open(tmp_path / "s.png")
    assert np.array_equal(np.asarray(Image.open(styled)), np.asarray(t(photo, style=style)))
    assert np.array_equal(np.asarray(Image.open(mean)), np.asarray(t(photo)))
    half = demo.translate_file(tmp_path / "p.png", "a2b", 64, tmp_path / "s.png", strength=0.5)
    assert np.array_equal(np.asarray(Image.open(half)), np.asarray(t(photo, style=style, strength=0.5)))
    (tmp_path / "s.txt").write_text("not an image")
    with pytest.raises(serve.UploadError, match="not an image"):
        demo.translate_file(tmp_path / "p.png", "a2b", 64, tmp_path / "s.txt")
    serve.build_blocks(demo)  # the page builds with the style upload


@pytest.mark.parametrize("code", ["learned", "vgg"])
def test_code_reconstruction_trains_the_generator_not_the_encoder(code):
    net, _ = coded_generator(code=code)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    net(x, encode_only=True, frozen_encoder=True).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in net.encoder.parameters())
    net(x, encode_only=True).sum().backward()
    trained = net.encoder.head if code == "vgg" else net.encoder  # a vgg code's VGG is fixed
    assert all(p.grad is not None for p in trained.parameters())
    assert code == "learned" or all(p.grad is None for p in net.encoder.vgg.parameters())


def test_film_lr_mult_is_a_learning_rate_for_the_modulation_only():
    """model.film_lr_mult scales FiLM's stored parameters in the forward pass: with the parameters divided by it
    the generator is the same function, and one Adam step moves the modulation that many times as far."""
    nets_by_mult = {}
    for mult in (1.0, 3.0):
        net, _ = coded_generator(generator="resnet_6blocks")
        for film in net.films():
            film.lr_mult = mult
            with torch.no_grad():
                film.weight /= mult
                film.bias.normal_(0, 0.1).div_(mult)
        nets_by_mult[mult] = net
    torch.manual_seed(1)
    x, style = torch.rand(2, 3, 24, 24) * 2 - 1, torch.rand(2, 3, 24, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(nets_by_mult[3.0](x, style=style), nets_by_mult[1.0](x, style=style))
    moved = {}
    for mult, net in nets_by_mult.items():
        films = net.films()
        before = [(f.weight * mult).detach().clone() for f in films]
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(x, style=style).square().mean().backward()
        opt.step()
        moved[mult] = torch.stack([((f.weight * mult).detach() - b).norm() for f, b in zip(films, before)])
    torch.testing.assert_close(moved[3.0], 3 * moved[1.0], rtol=1e-2, atol=0)


@pytest.mark.parametrize("code", ["learned", "vgg"])
@pytest.mark.parametrize("style_input, invariant", [("normalized", True), ("image", False)])
def test_a_normalized_style_input_codes_texture_not_palette(style_input, invariant, code):
    """model.style_input=normalized: the code ignores each channel's brightness and contrast (a palette), so two
    paintings that differ only in colour grade get the same code; the raw image's code tells them apart."""
    torch.manual_seed(0)
    net = nets.build_generator(ModelConfig(generator="resnet_6blocks", ngf=4, style_code=code,
                                           style_input=style_input))
    painting = torch.rand(1, 3, 32, 32) * 2 - 1
    regraded = painting * torch.tensor([0.5, 0.8, 0.3])[:, None, None] + torch.tensor([0.3, -0.1, 0.2])[:, None, None]
    with torch.no_grad():
        gap = (net(painting, encode_only=True) - net(regraded, encode_only=True)).abs().max().item()
    assert (gap < 1e-3) == invariant, gap


def test_exports_from_before_the_style_settings_load_with_the_old_behaviour(tmp_path):
    """Coded exports saved before model.style_input and model.film_lr_mult existed were trained with the raw
    image and FiLM at the base learning rate: they load that way, whatever today's defaults are."""
    gen_ab, cfg = coded_generator()
    legacy = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("style_input", "film_lr_mult")}
    path = checkpoint.save_generators(tmp_path / "old.safetensors", {"gen_ab": gen_ab, "gen_ba": coded_generator(1)[0]},
                                      legacy, step=3, ema=False, extra={"crop_size": 32})
    net, meta = load_generator(path, "a2b")
    assert "style_input" not in meta["model"]
    assert not net.encoder.input_norm and {f.lr_mult for f in net.films()} == {1.0}
    x, style = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x, style=style), gen_ab(x, style=style))


def test_hue_rotate_turns_colours_about_the_grey_axis():
    red_grey = torch.tensor([[1.0, -1.0, -1.0], [0.2, 0.2, 0.2]]).T.reshape(1, 3, 1, 2)  # a red and a grey pixel
    third = nets.hue_rotate(red_grey, torch.tensor([2 * torch.pi / 3]))
    assert torch.allclose(third[0, :, 0, 0], torch.tensor([-1.0, 1.0, -1.0]), atol=1e-6)  # red became green
    assert torch.allclose(third[0, :, 0, 1], torch.tensor([0.2, 0.2, 0.2]), atol=1e-6)  # grey stayed grey
    x = torch.rand(2, 3, 5, 5) * 0.5 - 0.25  # no clamping in this range
    turned = nets.hue_rotate(x, torch.tensor([0.7, -2.0]))
    assert not torch.allclose(turned, x, atol=1e-3)
    assert torch.allclose(turned.mean(1), x.mean(1), atol=1e-6)  # every pixel keeps its grey level
    assert torch.allclose(nets.hue_rotate(turned, torch.tensor([-0.7, 2.0])), x, atol=1e-6)
    assert torch.equal(nets.hue_rotate(x, torch.zeros(2)), x)


@pytest.mark.parametrize("jitter", [False, True])
def test_code_hue_jitter_turns_the_colours_the_encoder_reads(jitter):
    """loss.code_hue_jitter: in a training step G_ab's encoder reads the step's real B image (for the A->B code
    and for the B->A->B cycle's own code) with its hue turned by two different random angles; off, unchanged."""
    from accelerate import Accelerator

    from cyclestyle import losses, training
    from cyclestyle.config import LossConfig

    cfg = ModelConfig(generator="resnet_6blocks", ngf=4, ndf=4, style_code="learned")
    torch.manual_seed(0)
    gab, gba = nets.build_generator(cfg), nets.build_generator(cfg)
    da, db = nets.build_discriminator(cfg), nets.build_discriminator(cfg)
    seen = []
    gab.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    objective = losses.CycleGANObjective(LossConfig(code_hue_jitter=jitter), coded=True)
    a, b = torch.rand(1, 3, 32, 32) * 0.5 - 0.25, torch.rand(1, 3, 32, 32) * 0.5 - 0.25
    training.generator_backward(Accelerator(cpu=True), gab, gba, da, db, a, b, objective)
    reads_of_b = [x for x in seen if torch.allclose(x.mean(1), b.mean(1), atol=1e-5)]  # not the fakes
    assert len(reads_of_b) == 2
    if jitter:
        assert not any(torch.allclose(x, b, atol=1e-3) for x in reads_of_b)
        assert not torch.allclose(reads_of_b[0], reads_of_b[1], atol=1e-3)
    else:
        assert all(torch.equal(x, b) for x in reads_of_b)
