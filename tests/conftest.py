"""Shared fixtures: tiny real image folders and tiny configs (CPU, seconds per test)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from PIL import Image

from cyclestyle.config import Config, load_config


@pytest.fixture(autouse=True)
def _reset_accelerate():
    """Each test builds its own Accelerator; accelerate keeps process-wide state between them."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_images(folder, n, size=(40, 36), seed=0, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = size[0] + 4 * (i % 3), size[1] + 2 * (i % 2)  # mixed sizes, on purpose
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-40, 40, (h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"img_{i:02d}.{ext}")
    return folder


@pytest.fixture
def folders(tmp_path):
    """Domain A (6 png) and domain B (5 jpg, one in a sub-folder), unpaired."""
    a = write_images(tmp_path / "A", 6, seed=1)
    b = write_images(tmp_path / "B", 4, seed=2, ext="jpg")
    write_images(tmp_path / "B" / "nested", 1, seed=3, ext="jpg")
    return a, b


def tiny_overrides(folders, run_dir, *extra) -> list[str]:
    a, b = folders
    return [f"data.root_a={a}", f"data.root_b={b}", "data.load_size=36", "data.crop_size=32",
            "data.num_workers=0", "model.generator=resnet_6blocks", "model.ngf=8", "model.ndf=8",
            "loss.style_ab=0", f"train.run_dir={run_dir}", "train.steps=4", "train.decay_steps=2",
            "train.log_every=1", "train.image_every=2", "train.checkpoint_every=2", "train.cpu=true",
            "train.mixed_precision=no", *extra]


@pytest.fixture
def tiny_cfg(folders, tmp_path):
    def make(*extra, run="run") -> Config:
        return load_config(None, tiny_overrides(folders, tmp_path / run, *extra))

    return make


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture
def hostile_corpus(tmp_path):
    """A folder of everything users' scraped datasets contain. Returns (folder, good names, bad names).

    good: decoded and used (odd modes converted). bad: skipped and counted, each with a reason.
    """
    import io
    import os
    import struct
    import zlib

    root = tmp_path / "hostile"
    root.mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    photo.save(root / "ok.jpg")
    (root / "zero.jpg").write_bytes(b"")
    jpg, png = io.BytesIO(), io.BytesIO()
    photo.save(jpg, "JPEG")
    photo.save(png, "PNG")
    (root / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    (root / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 3])
    (root / "random.jpg").write_bytes(rng.integers(0, 255, 3000, dtype=np.uint8).tobytes())
    (root / "text.png").write_text("this is not an image\n")
    photo.save(root / "png_named.jpg", "PNG")  # wrong extension: read by content
    photo.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (20, 30))).astype(np.uint16)).save(root / "deep16.png")
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(root / "palette_alpha.png", transparency=0)
    photo.convert("L").save(root / "gray.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "one_pixel.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(root / "rotated.jpg", exif=exif)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # declares 10 Gpx
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                    + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    os.symlink(root / "loop_b.jpg", root / "loop_a.jpg")  # a symlink loop
    os.symlink(root / "loop_a.jpg", root / "loop_b.jpg")
    (root / "folder.jpg").mkdir()  # a directory named like an image: searched as a folder
    photo.save(root / "folder.jpg" / "inside.png")
    good = {"ok.jpg", "png_named.jpg", "cmyk.jpg", "deep16.png", "palette_alpha.png", "gray.png", "one_pixel.png",
            "rotated.jpg", "inside.png"}
    header_bad = {"zero.jpg", "random.jpg", "text.png", "bomb.png", "loop_a.jpg", "loop_b.jpg"}
    decode_bad = {"truncated.jpg", "truncated.png"}  # headers are fine: found only when decoded
    return root, good, header_bad, decode_bad


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory):
    """A real run folder (config.yaml, generators/last.safetensors) from 2 training steps (~1 s), shared by
    the tests that only read it (gallery, web demo)."""
    from accelerate.state import AcceleratorState, GradientState

    from cyclestyle.training import train

    root = tmp_path_factory.mktemp("tiny_trained")
    data = write_images(root / "A", 3, seed=1), write_images(root / "B", 3, seed=2)
    with one_thread():
        train(load_config(None, tiny_overrides(data, root / "run", "train.steps=2", "train.decay_steps=0",
                                               "model.ngf=4", "model.ndf=4")))
    AcceleratorState._reset_state(reset_partial_state=True)  # session scope: leave no state to the next test
    GradientState._reset_state()
    return root / "run"


@contextlib.contextmanager
def one_thread():
    """torch on one thread. For tiny networks: on a shared 2-core machine with another busy process, torch's
    2 threads contending for a core made such tests ~15x slower (26 s instead of 1.3 s measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def single_threaded_module():
    """``one_thread()`` for a whole test module (use with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    with one_thread():
        yield


@pytest.fixture
def no_network(monkeypatch):
    """Block every connection and name lookup that leaves 127.0.0.1, at the socket layer, whatever client
    makes it (torch.hub, urllib, requests). Returns the list of hosts that were refused."""
    import socket

    refused: list[str] = []
    local = {"127.0.0.1", "localhost", "::1"}
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            refused.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"network blocked by the test ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in local:
            refused.append(str(address[0]))
            raise ConnectionRefusedError(f"network blocked by the test ({address[0]})")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return refused


def cpu_flags_say_native_bf16() -> bool:
    """From /proc/cpuinfo, independently of torch's own checks: does this x86 CPU have the bf16 instructions
    (AVX512-BF16 or AMX-BF16)? Skips the test elsewhere."""
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.is_file():
        pytest.skip("needs an x86 Linux machine's /proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags
