import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.config import Config, DataConfig
from cyclestyle.data import (
    DataError,
    ImageReadError,
    UnpairedDataset,
    UnpairedStream,
    build_loader,
    build_transform,
    load_image,
    scan_folder,
)
from cyclestyle.validation import load_subset
from tests.conftest import write_images


def test_odd_modes_become_rgb(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "gray.png")
    rgba = Image.new("RGBA", (5, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (5, 4), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pal.png", transparency=1)
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "deep16.png")
    Image.fromarray(np.full((4, 5), 32896, dtype=np.uint16)).save(tmp_path / "mid16.png")
    Image.new("1", (5, 4), 1).save(tmp_path / "bw.bmp")
    expected = {"gray.png": (77, 77, 77), "rgba.png": (255, 255, 255), "pal.png": (255, 255, 255),
                "deep16.png": (255, 255, 255), "mid16.png": (128, 128, 128), "bw.bmp": (255, 255, 255)}
    for name, rgb in expected.items():
        img = load_image(tmp_path / name)
        assert img.mode == "RGB" and img.size == (5, 4), name
        assert tuple(np.asarray(img)[0, 0]) == rgb, name
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg")).astype(int)
    assert cmyk[0, 0, 0] > 200 and cmyk[0, 0, 1] < 60 and cmyk[0, 0, 2] < 60  # red


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 4), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (4, 6)


def test_jpeg_draft_decodes_large_photos_smaller(tmp_path):
    Image.new("RGB", (1200, 800), (90, 10, 200)).save(tmp_path / "big.jpg")
    img = load_image(tmp_path / "big.jpg", draft_size=150)
    assert min(img.size) >= 2 * 150 and img.size[0] < 1200  # the resize, not the DCT scaler, does the last 2x
    assert img.size[0] / img.size[1] == pytest.approx(1.5, rel=0.02)


def test_scan_recurses_skips_bad_files_with_one_warning(tmp_path):
    write_images(tmp_path / "d" / "x" / "y", 2)
    write_images(tmp_path / "d", 1, ext="jpg")
    (tmp_path / "d" / "empty.jpg").write_bytes(b"")
    (tmp_path / "d" / "text.png").write_text("not an image")
    (tmp_path / "d" / "notes.txt").write_text("ignored: not an image extension")
    write_images(tmp_path / "d" / "dir.jpg", 1)  # a folder named like an image is a folder
    os.symlink(tmp_path / "d", tmp_path / "d" / "x" / "loop")  # a folder symlink loop
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\) of 6") as record:
        result = scan_folder(tmp_path / "d", "data.root_a")
    assert len(record) == 1
    assert sorted(str(p.relative_to(tmp_path / "d")) for p in result.files) == [
        "dir.jpg/img_00.png", "img_00.jpg", "x/y/img_00.png", "x/y/img_01.png"]  # each file once despite the loop
    assert {p.name for p, _ in result.skipped} == {"empty.jpg", "text.png"}


def test_missing_or_empty_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=f"data.root_b folder not found: {tmp_path / 'nope'}"):
        scan_folder(tmp_path / "nope", "data.root_b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"data.root_a folder {tmp_path / 'empty'} holds no readable image"):
        scan_folder(tmp_path / "empty", "data.root_a")


def test_truncated_image_is_replaced_with_a_warning(tmp_path):
    write_images(tmp_path / "a", 2)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "a" / "img_00.png").write_bytes(buf.getvalue()[:300])  # header fine, data cut
    files = scan_folder(tmp_path / "a").files
    assert len(files) == 2  # the header check cannot see truncation
    with pytest.raises(ImageReadError, match="img_00.png"):
        load_image(files[0])
    ds = UnpairedDataset(files, files, build_transform(16, 20), draft_size=20)
    with pytest.warns(UserWarning, match="img_00.png.*using the next image"):
        sample = ds[(0, 1, 7)]
    assert torch.equal(sample["a"], UnpairedDataset(files, files, build_transform(16, 20), 20)[(1, 1, 7)]["a"])


def test_transform_range_shape_and_upscaling_small_images():
    t = build_transform(crop_size=32, load_size=36)
    tiny = np.full((3, 2, 3), 255, dtype=np.uint8)  # smaller than the crop: resized up, not rejected
    out = t(image=tiny)["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))  # 255 -> +1
    black = t(image=np.zeros((50, 70, 3), dtype=np.uint8))["image"]
    assert torch.allclose(black, -torch.ones_like(black))  # 0 -> -1
    keep = build_transform(32, 40, resize="shorter_side")(image=np.zeros((40, 120, 3), np.uint8))["image"]
    assert keep.shape == (3, 32, 32)


def _photo_like(w, h, seed=0):
    """A picture with the statistics of a photo, which JPEG keeps (unlike pure noise): 1/f colour noise --
    smooth gradients plus detail at every scale -- and a few hard-edged rectangles."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.rfftfreq(w)[None, :], np.fft.fftfreq(h)[:, None])
    f[0, 0] = np.inf
    spectrum = (rng.normal(size=(3, *f.shape)) + 1j * rng.normal(size=(3, *f.shape))) / f
    img = np.fft.irfft2(spectrum, s=(h, w)).transpose(1, 2, 0)
    img = 128 + 40 * img / img.std()
    for _ in range(8):
        x, y = rng.integers(0, w - 64), rng.integers(0, h - 64)
        img[y:y + rng.integers(32, h // 3), x:x + rng.integers(32, w // 3)] += rng.uniform(-50, 50, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_png_and_jpeg_of_one_picture_give_the_same_training_crop(tmp_path):
    """Otherwise, with JPEG photos and PNG paintings, the discriminator can tell the domains by file format."""
    picture = Image.fromarray(_photo_like(1024, 768))
    picture.save(tmp_path / "p.png")
    picture.save(tmp_path / "p.jpg", quality=95)
    load, crop = 128, 112

    def crop_of(path):  # the training path: build_loader's draft size and transform, one sample seed
        return UnpairedDataset([path], [path], build_transform(crop, load), draft_size=load)[(0, 0, 3)]["a"]

    diff = (crop_of(tmp_path / "p.png") - crop_of(tmp_path / "p.jpg")).abs() * 127.5  # grey levels
    # Measured: mean 0.46, max 3 (JPEG q95's own error). Drafting to 1x + bilinear resize: mean 12, max 66.
    assert diff.mean() < 1.5 and diff.max() < 10
    assert load_image(tmp_path / "p.jpg", draft_size=load).size == (512, 384)  # drafted, but only to >= 2x


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_downscaling_antialiases(tmp_path, ext):
    """A zone plate, rings whose frequency grows from 0 at the centre to Nyquist at the edge, shrunk
    1024 -> 100 px. Outside radius out^2/n of the output its frequencies are above twice the output's
    Nyquist: a resize that filters before sampling leaves flat grey there, one that does not draws moire."""
    n, out = 1024, 100
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    plate = 127.5 + 100 * np.cos(np.pi * (x * x + y * y) / n)  # local frequency r / n cycles per pixel
    Image.fromarray(plate.round().astype(np.uint8)).save(tmp_path / f"zp.{ext}", quality=95)  # png ignores it
    t = build_transform(out, out, train=False)
    grey = (t(image=np.asarray(load_image(tmp_path / f"zp.{ext}", draft_size=out)))["image"].mean(0) + 1) * 127.5
    y, x = np.mgrid[:out, :out] - (out - 1) / 2
    aliased = grey[torch.from_numpy(np.hypot(x, y) > out * out / n)]
    # Measured std there: png 2.6, jpg 2.1 grey levels. Bilinear without antialiasing: png 46 (the plate's
    # own std is 71), jpg 2.5 only because the DCT scaler had already shrunk it 8x -- the format cue.
    assert aliased.std() < 8


def test_validation_subset_decodes_and_resizes_like_training(tmp_path):
    for i in range(2):
        Image.fromarray(_photo_like(640, 480, seed=i)).save(tmp_path / f"v{i}.jpg", quality=90)
    cfg = Config()
    cfg.data.load_size, cfg.data.crop_size, cfg.validation.num_images = 64, 48, 2
    t = build_transform(48, 64, flip=False, train=False)
    expected = [t(image=np.asarray(load_image(tmp_path / f"v{i}.jpg", draft_size=64)))["image"] for i in range(2)]
    assert torch.equal(load_subset(tmp_path, cfg, "validation.root_a"), torch.stack(expected))


def test_stream_each_domain_is_a_permutation_per_epoch():
    s = UnpairedStream(len_a=5, len_b=3, seed=0, batch_size=1)
    keys = [s.key(p) for p in range(15)]
    for epoch in range(3):
        assert sorted(k[0] for k in keys[epoch * 5:(epoch + 1) * 5]) == list(range(5))
    for epoch in range(5):
        assert sorted(k[1] for k in keys[epoch * 3:(epoch + 1) * 3]) == list(range(3))
    assert [k[0] for k in keys[:5]] != [k[0] for k in keys[5:10]]  # reshuffled each epoch
    assert len({k[2] for k in keys}) == 15  # a fresh augmentation seed per sample


def test_stream_resume_and_rank_sharding():
    def take(stream, n):
        it = iter(stream)
        return [next(it) for _ in range(n)]

    full = take(UnpairedStream(7, 4, seed=3, batch_size=2), 12)
    assert take(UnpairedStream(7, 4, seed=3, batch_size=2, start_batch=2), 8) == full[4:]
    rank0 = take(UnpairedStream(7, 4, seed=3, batch_size=2, rank=0, world_size=2), 4)
    rank1 = take(UnpairedStream(7, 4, seed=3, batch_size=2, rank=1, world_size=2), 4)
    assert rank0 == full[0:2] + full[4:6] and rank1 == full[2:4] + full[6:8]


def _loader(folders, workers, seed=0):
    a, b = folders
    cfg = DataConfig(root_a=str(a), root_b=str(b), load_size=36, crop_size=32, num_workers=workers)
    return build_loader(cfg, seed=seed, batch_size=2)


def test_workers_do_not_change_or_repeat_samples(folders):
    def batches(loader, n=4):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    serial, parallel = batches(_loader(folders, 0)), batches(_loader(folders, 2))
    for x, y in zip(serial, parallel):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"])
    crops = torch.cat([batch["a"] for batch in parallel])
    flat = crops.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(flat)) * 1e9).min() > 0  # no two crops identical
    assert serial[0]["a"].shape == (2, 3, 32, 32) and serial[0]["a"].min() >= -1 and serial[0]["a"].max() <= 1
    other_seed = next(iter(_loader(folders, 0, seed=1)))
    assert not torch.equal(other_seed["a"], serial[0]["a"])


def test_list_inputs_one_file_or_a_folder_and_errors_name_the_option(tmp_path):
    from cyclestyle.data import list_inputs

    folder = write_images(tmp_path / "in" / "deep", 2)
    photo = folder / "img_00.png"
    assert list_inputs(photo) == [(photo, Path("img_00.png"))]
    assert [rel for _, rel in list_inputs(tmp_path / "in")] == [Path("deep/img_00.png"), Path("deep/img_01.png")]
    with pytest.raises(DataError, match=r"--input not found: .*missing \(give an image file or a folder"):
        list_inputs(tmp_path / "missing")
    with pytest.raises(DataError, match=r"--photos folder not found: .*img_00.png"):
        list_inputs(photo, "--photos", folder_only=True)
    (tmp_path / "empty").mkdir()
    assert list_inputs(tmp_path / "empty") == []
    with pytest.raises(DataError, match="empty has no images"):
        list_inputs(tmp_path / "empty", require=True)
