import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cyclestyle.config import DataConfig
from cyclestyle.data import (DataError, ImageReadError, UnpairedDataset, UnpairedStream, build_loader,
                             build_transform, load_image, scan_folder)
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
    assert min(img.size) >= 150 and img.size[0] < 1200
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
