"""Single-image style transfer: a randomly initialised VGG on tiny images (the optimisation, not the art)."""

import types

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle import cli, stylize as st
from cyclestyle.data import DataError, pil_to_tensor
from cyclestyle.vgg import STYLE_LAYERS, VGGWeightsError


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """torchvision's vgg19(weights=None) features of seed 0, through the local-file loader: the thresholds below
    were set on these random weights (cyclestyle's own "random" builder skips the classifier, so its draws
    differ)."""
    from torchvision.models import vgg19

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random_seed0_features.pth"
    torch.save(vgg19(weights=None).features.state_dict(), path)  # built once: the full init takes seconds
    return st.load_vgg(str(path))


def photo(w=40, h=28, seed=0):
    """Smooth colour gradients plus mild noise, non-square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + 20
    return Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))


def painting(w=36, h=36):
    """Saturated red / blue diagonal stripes: a texture and colours far from the photo's."""
    y, x = np.mgrid[0:h, 0:w]
    stripe = (((x + y) // 4) % 2)[..., None] == 1
    return Image.fromarray(np.where(stripe, [230, 40, 30], [30, 60, 220]).astype(np.uint8))


def losses_of(vgg, image, content, style):
    """Unweighted style and content loss of ``image`` against the targets stylize() uses at its size."""
    c = pil_to_tensor(content.resize(image.size, Image.Resampling.LANCZOS))
    s = pil_to_tensor(style.resize(st._style_size(style.size, max(image.size)), Image.Resampling.LANCZOS))
    loss = st.GatysLoss(vgg, c, s, style_weight=1.0, content_weight=1.0, tv_weight=0.0)
    with torch.no_grad():
        return {k: v.item() for k, v in loss(pil_to_tensor(image)).items()}


def chroma_diff(a, b):
    """Mean |difference| of Cb and of Cr per pixel, in 8-bit levels (PIL's full-range YCbCr)."""
    ya, yb = (np.asarray(im.convert("YCbCr"), dtype=np.float64) for im in (a, b))
    return np.abs(ya - yb).mean(axis=(0, 1))[1:]


COMMON = dict(size=None, content_weight=10.0, device="cpu")  # content weight: both terms matter on random VGG


@pytest.fixture(scope="module")
def plain(vgg):
    history = []
    out = st.stylize(photo(), painting(), steps=25, vgg=vgg, callback=history.append, **COMMON)
    return out, history


def test_style_loss_drops_content_stays_bounded_output_has_content_size(vgg, plain):
    out, history = plain
    content, style = photo(), painting()
    assert out.size == content.size == (40, 28) and out.mode == "RGB"
    start, end = losses_of(vgg, content, content, style), losses_of(vgg, out, content, style)
    assert end["style"] < 0.1 * start["style"]  # measured 0.04
    # bounded: the output stays far closer to the photo's relu4_2 features than the painting itself is
    painting_itself = losses_of(vgg, style.resize(content.size), content, style)
    assert end["content"] < 0.6 * painting_itself["content"]  # measured 0.41
    assert [s.step for s in history] == list(range(1, 26)) and history[-1].total == 25
    assert history[0].losses["content"] == 0 and history[0].losses["style"] == pytest.approx(1e6 * start["style"],
                                                                                            rel=1e-3)
    assert set(history[0].losses) == {"style", "content", "tv", "total"}


def test_preserve_color_keeps_the_photos_chroma(vgg, plain):
    content = photo()
    kept = st.stylize(content, painting(), steps=10, vgg=vgg, preserve_color=True, **COMMON)
    # Measure: mean |Cb| and |Cr| difference to the photo per pixel, in 8-bit levels. Luminance-only transfer
    # leaves only 8-bit rounding and RGB clipping; plain transfer takes the stripes' red and blue.
    with_option, without = chroma_diff(kept, content), chroma_diff(plain[0], content)
    assert with_option.max() < 1.0 and without.min() > 20 * with_option.max()  # measured 0.05 vs 54
    mean_cbcr = [np.asarray(im.convert("YCbCr"), dtype=np.float64)[..., 1:].mean(axis=(0, 1)) for im in (kept, content)]
    assert np.abs(mean_cbcr[0] - mean_cbcr[1]).max() < 0.5  # and so the colour statistics
    luma_change = np.abs(np.asarray(kept.convert("L"), float) - np.asarray(content.convert("L"), float)).mean()
    assert luma_change > 5  # the style did act, on luminance


def test_bf16_runs_the_vgg_in_bf16_and_still_converges(vgg):
    dtypes = []
    hook = vgg.features[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        history = []
        out = st.stylize(photo(), painting(), steps=20, vgg=vgg, precision="bf16", callback=history.append, **COMMON)
    finally:
        hook.remove()
    assert set(dtypes) == {torch.bfloat16}
    assert all(isinstance(v, float) for v in history[-1].losses.values())  # fp32 losses, read out
    content, style = photo(), painting()
    assert losses_of(vgg, out, content, style)["style"] < 0.1 * losses_of(vgg, content, content, style)["style"]


def test_adam_from_noise_lowers_the_loss(vgg):
    history = []
    st.stylize(photo(), painting(), steps=30, vgg=vgg, optimizer="adam", init="noise", precision="bf16",
               callback=history.append, **COMMON)
    first, last = history[0].losses, history[-1].losses
    assert last["total"] < 0.2 * first["total"] and last["content"] < 0.7 * first["content"]


def test_the_output_is_the_best_image_seen_even_when_lbfgs_jumps_and_nan_stops(vgg):
    history = []
    content, style = photo(), painting()
    out = st.stylize(content, style, steps=8, lr=50.0, vgg=vgg, callback=history.append, **COMMON)  # far too large
    totals = [s.losses["total"] for s in history]
    assert max(totals) > 10 * min(totals)  # L-BFGS did jump ...
    end = losses_of(vgg, out, content, style)  # ... but the output is the best image, not the last one
    assert 1e6 * end["style"] + 10 * end["content"] == pytest.approx(min(totals), rel=0.02)  # 8-bit rounding
    with pytest.raises(FloatingPointError, match="diverged at step 1"):
        st.stylize(content, style, steps=2, style_weight=float("nan"), vgg=vgg, **COMMON)


def test_lbfgs_restarts_from_the_best_image_after_a_nan():
    target, calls = torch.full((1, 3, 4, 4), 0.5), []

    def loss_fn(x):  # a quadratic bowl that returns nan once, on the third evaluation
        calls.append(len(calls))
        value = (x - target).square().sum() * (float("nan") if len(calls) == 3 else 1.0)
        return {"style": value, "content": 0 * value, "tv": 0 * value, "total": value}

    out = st._optimise(torch.zeros(1, 3, 4, 4), loss_fn, "lbfgs", 1.0, 8, lambda terms, image: None)
    assert len(calls) == 9 and torch.allclose(out, target, atol=1e-4)  # 8 steps + the final measure


def test_multi_scale_plan_sizes_and_cost(vgg):
    seen = []
    out = st.stylize(photo(), painting(), size=64, steps=8, scales=2, vgg=vgg, device="cpu",
                     callback=lambda s: seen.append((s.scale, s.size, s.step)))
    assert out.size == (64, 45)
    assert [s[:2] for s in seen] == [(0, (32, 22))] * 8 + [(1, (64, 45))] * 2  # refine: steps // 4
    assert [s[2] for s in seen] == list(range(1, 11))
    # a step costs in proportion to its pixels: 1024 px over 2 or 3 scales vs 512 px in one
    assert st.scale_plan((1024, 768), 300, 3) == [((256, 192), 300), ((512, 384), 75), ((1024, 768), 75)]
    cost = lambda plan: sum(w * h * n for (w, h), n in plan)  # noqa: E731
    one = cost(st.scale_plan((512, 512), 300))
    assert cost(st.scale_plan((1024, 1024), 300, 2)) == 2 * one
    assert cost(st.scale_plan((1024, 1024), 300, 3)) == 1.5 * one


def test_sizes_and_small_images(vgg):
    assert st.output_size((40, 28), 48) == (48, 34) and st.output_size((28, 40), None) == (28, 40)
    with pytest.raises(DataError, match="at least 16 px.*larger --size or fewer --scales"):
        st.scale_sizes((64, 45), 3)
    with pytest.raises(DataError, match="12x10 px.*at least 16 px"):
        st.stylize(photo(12, 10), painting(), size=None, steps=1, vgg=vgg, device="cpu")
    with pytest.raises(ValueError, match=r"lacks layers \['relu4_2'\]"):
        st.stylize(photo(), painting(), vgg=types.SimpleNamespace(layers=STYLE_LAYERS), device="cpu")


def test_ycbcr_matches_pil_and_round_trips():
    image = photo(24, 16)
    ycc = st.rgb_to_ycbcr(pil_to_tensor(image))[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(ycc - np.asarray(image.convert("YCbCr"), dtype=np.float64)).max() < 1.0
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.allclose(st.ycbcr_to_rgb(st.rgb_to_ycbcr(x)), x, atol=1e-5)


@pytest.fixture
def files(tmp_path):
    photo().save(tmp_path / "photo.png")
    painting().save(tmp_path / "painting.jpg")
    return tmp_path


def test_cli_writes_the_result_and_intermediates(files, vgg, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(st, "load_vgg", lambda weights, option: asked.append((weights, option)) or vgg)
    out = files / "out" / "result.png"
    code = cli.main(["stylize", "--content", str(files / "photo.png"), "--style", str(files / "painting.jpg"),
                     "--output", str(out), "--size", "40", "--steps", "4", "--save-every", "2", "--device", "cpu",
                     "--vgg-weights", "random", "--preserve-color"])
    assert code == 0
    assert asked == [("random", "--vgg-weights")]
    assert Image.open(out).size == (40, 28)
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.png", "result.step0002.png", "result.step0004.png"]
    assert f"wrote {out} (40x28)" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing style", "unreadable style", "bad extension", "output is input", "no gpu"])
def test_cli_user_errors_are_one_line_before_any_work(files, monkeypatch, capsys, case):
    monkeypatch.setattr(st, "load_vgg", lambda *a, **k: pytest.fail("VGG loaded before the inputs were checked"))
    args = {"--content": files / "photo.png", "--style": files / "painting.jpg", "--output": files / "o.png"}
    if case == "missing style":
        args["--style"], expected = files / "nope.jpg", f"--style {files / 'nope.jpg'} does not exist"
    elif case == "unreadable style":
        (files / "text.jpg").write_text("not an image")
        args["--style"], expected = files / "text.jpg", "--style: cannot read image"
    elif case == "bad extension":
        args["--output"], expected = files / "o.xyz", "unknown image extension '.xyz'"
    elif case == "output is input":
        args["--output"], expected = files / "photo.png", "is one of the input images"
    else:
        if torch.cuda.is_available():
            pytest.skip("a GPU is there")
        args["--device"], expected = "cuda", "no CUDA GPU is available; use --device cpu"
    code = cli.main(["stylize", *[str(a) for kv in args.items() for a in kv]])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_missing_vgg_weights_names_the_option(files, capsys):
    missing = files / "vgg19.pth"
    code = cli.main(["stylize", "--content", str(files / "photo.png"), "--style", str(files / "painting.jpg"),
                     "--output", str(files / "o.png"), "--vgg-weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--vgg-weights file not found: {missing}" in err and "--vgg-weights=/path/to/vgg19-dcbb9e9d.pth" in err
    assert "loss.style_ab" not in err  # training's way out does not apply here
    with pytest.raises(VGGWeightsError, match="pass vgg_weights=/path/to"):  # the API names its own argument
        st.stylize(photo(), painting(), vgg_weights=str(missing))
