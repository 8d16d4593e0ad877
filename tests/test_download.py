"""`cyclestyle download` against a real HTTP server on 127.0.0.1 (Python's http.server, with Range support)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from cyclestyle.cli import main
from cyclestyle.translate import Translator
from tests.test_reference import resnet_reference_forward, resnet_reference_state


class Server:
    """Serves ``files`` (path -> bytes). ``cut[path] = n``: the next answer for path stops after n bytes
    (Content-Length still says all), as a dropped connection would. ``honour_range``: False plays a server
    that ignores Range headers. ``ranges`` records the Range header of each request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.honour_range = True
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted[6:-1]) if wanted and server.honour_range else 0
                if start >= len(body) and wanted:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                limit = server.cut.pop(self.path, None)
                self.wfile.write(body[start:] if limit is None else body[start:start + limit])
                if limit is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll interval: shutdown() waits up to one interval (0.5 s by default) per test
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((24, 20), 40 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_model_download_resumes_and_is_ready_to_translate(server, tmp_path, capsys):
    state = resnet_reference_state(seed=4, stray_stats=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    body = buf.getvalue()
    server.files["/m/style_monet.pth"] = body
    server.cut["/m/style_monet.pth"] = len(body) // 3
    args = ["download", "model", "style_monet", "--output", str(tmp_path / "models"),
            "--url", f"{server.url}/m/style_monet.pth"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "broke off" in err and "rerun the same command to resume" in err
    part = tmp_path / "models" / "style_monet.pth.part"
    assert part.stat().st_size == len(body) // 3 and not (tmp_path / "models" / "style_monet.pth").exists()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert server.ranges == [None, f"bytes={len(body) // 3}-"]  # the second request asked for the rest only
    digest = hashlib.sha256(body).hexdigest()
    assert f"sha256 {digest}" in out and not part.exists()
    assert (tmp_path / "models" / "style_monet.pth").read_bytes() == body
    translator = Translator.load(tmp_path / "models" / "style_monet.safetensors", precision="fp32")
    assert translator.meta["source"]["a2b"]["sha256"] == digest and translator.meta["url"].endswith("style_monet.pth")
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    # 1e-5: on CPU the ResNet runs channels_last, whose kernels sum in another order than NCHW ones
    assert (translator(x) - resnet_reference_forward(state, x, 6).clamp(-1, 1)).abs().max() < 1e-5
    # a known checksum that does not match refuses the file
    assert main([*args, "--sha256", "0" * 64]) == 2
    assert "is not the expected" in capsys.readouterr().err


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, capsys):
    body = bytes(range(256)) * 300
    server.files["/f.pth"] = body
    server.cut["/f.pth"] = 5000
    server.honour_range = False
    from cyclestyle.download import DownloadError, fetch

    with pytest.raises(DownloadError):
        fetch(f"{server.url}/f.pth", tmp_path / "f.pth", progress=False)
    assert fetch(f"{server.url}/f.pth", tmp_path / "f.pth", progress=False) == hashlib.sha256(body).hexdigest()
    assert (tmp_path / "f.pth").read_bytes() == body


def test_dataset_download_extracts_the_unpaired_layout(server, tmp_path, capsys):
    members = {f"mini2photo/{d}/{i}.png": _png(i) for d in ("trainA", "trainB", "testA", "testB") for i in range(2)}
    body = _zip(members)
    server.files["/d/mini2photo.zip"] = body
    args = ["download", "dataset", "mini2photo", "--output", str(tmp_path / "datasets"),
            "--url", f"{server.url}/d/mini2photo.zip"]
    assert main(args) == 0
    out = capsys.readouterr().out
    root = tmp_path / "datasets" / "mini2photo"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == \
        sorted(m.removeprefix("mini2photo/") for m in members)
    record = json.loads((root / "download.json").read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["missing_folders"] == []
    assert f"data.root_a={root}/trainA" in out and not (tmp_path / "datasets" / "mini2photo.zip").exists()
    assert main(args) == 0 and "already there" in capsys.readouterr().out
    assert len(server.ranges) == 1  # nothing fetched again


def test_zip_with_a_traversal_member_is_refused(server, tmp_path, capsys):
    server.files["/evil.zip"] = _zip({"evil/trainA/a.png": _png(0), "evil/../../escaped.txt": b"gotcha"})
    assert main(["download", "dataset", "evil", "--output", str(tmp_path / "datasets"),
                 "--url", f"{server.url}/evil.zip"]) == 2
    err = capsys.readouterr().err
    assert "member 'evil/../../escaped.txt' would be written outside" in err and "nothing was extracted" in err
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "datasets" / "evil").exists()


def test_offline_and_unknown_names_are_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on: connection refused, as on a machine offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["download", "model", "style_monet", "--output", str(tmp_path),
                 "--url", f"http://127.0.0.1:{port}/style_monet.pth"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach 127.0.0.1" in err and "looks offline" in err and "--url for a mirror" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.iterdir())
    assert main(["download", "model", "style_monett"]) == 2
    assert "unknown model 'style_monett': the reference publishes style_monet, " in capsys.readouterr().err


def test_help_lists_the_reference_names(capsys):
    with pytest.raises(SystemExit):
        main(["download", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "style_monet, style_cezanne, style_ukiyoe, style_vangogh" in text and "vangogh2photo" in text
