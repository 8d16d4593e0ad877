"""A local web demo of a trained checkpoint (gradio): upload a photo, get the translation, download it.

``serve(checkpoint, host="127.0.0.1", port=7860)`` loads both generators of a run folder or export and
serves a page where one drops or picks a photo, chooses the direction (a2b or b2a: every export has both)
and the output size, and sees and downloads the result as PNG. Translation goes through
``cyclestyle.translate.Translator`` (the code behind ``cyclestyle translate``), tiled above
``TILE_ABOVE`` px so memory stays bounded.

Limits, so that one upload cannot exhaust the machine:

- the queue runs one translation at a time (concurrency 1) and holds at most ``QUEUE_SIZE`` waiting;
- uploads over ``max_upload_mb`` are refused (by gradio when it supports a limit, and always here), and
  images over ``max_pixels`` are refused from their header, before they are decoded;
- the output's longer side is capped at ``max_side`` (2048 px by default).

Offline and private by default: binds to 127.0.0.1, no share tunnel, gradio's analytics off, and the page
uses system fonts so it requests nothing from outside the machine. gradio is an optional extra
(``pip install 'cyclestyle[serve]'``); constraints.txt pins the version the browser test runs (6.31). Keyword
arguments that moved or were renamed between gradio versions are passed only where the installed version
declares them (``_accepted``), so other recent versions work too.
"""

from __future__ import annotations

import atexit
import inspect
import ipaddress
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

# Before gradio is imported: gradio reads it at import time and otherwise reports usage over the network.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

try:
    import gradio as gr
except ModuleNotFoundError as err:
    if err.name != "gradio":
        raise
    raise ModuleNotFoundError("the web demo needs gradio, an optional extra: pip install 'cyclestyle[serve]' "
                              "(with -c constraints.txt in a checkout)", name="gradio") from None

from PIL import Image

from cyclestyle.data import ImageReadError, load_image
from cyclestyle.translate import Translator, resized

DEFAULT_SIDE = 512  # output longer side offered first, px
MIN_SIDE = 64
MAX_SIDE = 2048  # cap on the output's longer side
TILE_ABOVE = 1024  # outputs with a longer side above this are translated in tiles
TILE, TILE_OVERLAP = 512, 64
MAX_UPLOAD_MB = 25
MAX_PIXELS = 50_000_000  # input images larger than this are refused before decoding (a 50 Mpx photo)
QUEUE_SIZE = 16  # waiting requests beyond this are turned away ("queue full") instead of piling up
KEEP_RESULTS = 64  # result files kept for download; older ones are deleted

# System font stacks: gradio's default themes name Google Fonts (3.x) or bundled web fonts; system fonts
# need no request at all.
SANS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


class UploadError(ValueError):
    """An upload the demo refuses; the message is shown on the page as is."""


def _accepted(fn, **kwargs) -> dict:
    """The keyword arguments ``fn`` declares by name (gradio moved and renamed several between 3.x and 4+)."""
    params = inspect.signature(fn).parameters
    return {key: value for key, value in kwargs.items() if key in params}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Demo:
    """The demo's logic, without the web page: ``translate_file(path, direction, side) -> PNG path``."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", max_side: int = MAX_SIDE,
                 max_upload_mb: float = MAX_UPLOAD_MB, max_pixels: int = MAX_PIXELS,
                 results_dir: str | Path | None = None, checkpoint_b: str | Path | None = None):
        if not MIN_SIDE <= max_side <= MAX_SIDE:
            raise ValueError(f"max_side must be between {MIN_SIDE} and {MAX_SIDE} px, got {max_side}")
        self.checkpoint = str(checkpoint)
        # Both generators up front: a wrong checkpoint fails before the server starts. A reference .pth
        # holds one direction: the page then offers a2b only.
        self.translators = Translator.load_all(checkpoint, device, path_b=checkpoint_b)
        self.max_side = max_side
        self.max_upload_bytes = int(max_upload_mb * 1_000_000)
        self.max_pixels = max_pixels
        if results_dir is None:
            results_dir = tempfile.mkdtemp(prefix="cyclestyle-serve-")
            atexit.register(shutil.rmtree, results_dir, ignore_errors=True)
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)

    def open_upload(self, path: str | Path) -> Image.Image:
        """Decode an uploaded file, refusing what is too large or not an image with a clear message."""
        path = Path(path)
        size = path.stat().st_size
        if size > self.max_upload_bytes:
            raise UploadError(f"The file is {size / 1e6:.1f} MB; the limit is {self.max_upload_bytes / 1e6:g} MB.")
        # The header alone gives the size: a huge image (or a decompression bomb) is refused before
        # its pixels are decoded.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as probe:
                    width, height = probe.size
        except Image.DecompressionBombError:
            width = height = self.max_pixels  # over the limit: said below
        except Exception:  # PIL raises several types for non-images; all mean the same to the user
            raise UploadError("This file is not an image that can be read: upload a JPEG, PNG, WebP, BMP or "
                              "TIFF photo.") from None
        if width * height > self.max_pixels:
            raise UploadError(f"The image is {width}x{height} ({width * height / 1e6:.0f} Mpx); the limit is "
                              f"{self.max_pixels / 1e6:g} Mpx. Downscale it first.")
        try:
            return load_image(path)
        except ImageReadError:
            raise UploadError("The image could not be decoded (truncated or corrupt file?): try another "
                              "one.") from None

    @property
    def styled(self) -> bool:
        """Whether the model takes a style painting (model.style_code): the page then offers an upload for one."""
        return any(t.styled for t in self.translators.values())

    def translate_image(self, image: Image.Image, direction: str, side: int,
                        style: Image.Image | None = None, strength: float = 1.0) -> Image.Image:
        """Downscale so the longer side is at most ``side`` (capped at ``max_side``), then translate (in the
        style of the painting ``style`` at ``strength``, for a style-coded model)."""
        if direction not in self.translators:
            raise UploadError(f"Unknown direction {direction!r}: choose {' or '.join(self.translators)}.")
        if style is not None and not self.translators[direction].styled:
            raise UploadError("This model does not take a style painting (it was trained without style codes); "
                              "remove the style upload.")
        side = max(MIN_SIDE, min(int(side), self.max_side))
        image = resized(image, None, side)
        tile = TILE if max(image.size) > TILE_ABOVE else None
        return self.translators[direction](image, tile=tile, overlap=TILE_OVERLAP, style=style,
                                           strength=max(0.0, float(strength)))

    def translate_file(self, path: str | Path, direction: str, side: int, style_path: str | Path | None = None,
                       strength: float = 1.0) -> Path:
        """Translate an uploaded file (with an uploaded style painting, at ``strength``); returns the result's
        PNG (kept for download)."""
        style = self.open_upload(style_path) if style_path else None
        result = self.translate_image(self.open_upload(path), direction, side, style, strength)
        stem = re.sub(r"[^\w-]+", "_", Path(path).stem)[:40] or "image"
        target = self.results_dir / f"{stem}-{direction}-{uuid.uuid4().hex[:8]}.png"
        result.save(target, "PNG")
        self._prune()
        return target

    def _prune(self) -> None:
        files = sorted(self.results_dir.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP_RESULTS:]:
            old.unlink(missing_ok=True)


def _upload_path(upload) -> str | None:
    """gradio 4+ passes a file path; 3.x a temporary-file object with ``.name``."""
    if upload is None:
        return None
    return upload if isinstance(upload, str) else getattr(upload, "name", None)


def local_theme():
    return gr.themes.Default(font=SANS, font_mono=MONO)


def build_blocks(demo: Demo, default_side: int = DEFAULT_SIDE, theme=None) -> "gr.Blocks":
    """The page: file drop, direction, size slider, button; result image and download."""
    default_side = max(MIN_SIDE, min(default_side, demo.max_side))

    def run(upload, direction, side, style=None, strength=1.0):
        path = _upload_path(upload)
        if not path:
            raise gr.Error("Upload a photo first.")
        try:
            result = demo.translate_file(path, direction, side, _upload_path(style), strength)
        except UploadError as err:
            raise gr.Error(str(err)) from None
        return str(result), str(result)

    with gr.Blocks(**_accepted(gr.Blocks.__init__, title="cyclestyle demo", analytics_enabled=False,
                               theme=theme, delete_cache=(3600, 3600))) as blocks:
        gr.Markdown(f"## cyclestyle: translate a photo\nCheckpoint `{demo.checkpoint}`. Drop or choose a photo "
                    f"(up to {demo.max_upload_bytes / 1e6:g} MB and {demo.max_pixels / 1e6:g} Mpx), pick the "
                    f"direction and the output size (longer side, at most {demo.max_side} px; smaller photos "
                    "keep their size), then press Translate. One translation runs at a time.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Photo", file_types=["image"], elem_id="upload")
                direction = gr.Radio(list(demo.translators), value="a2b", label="Direction (a2b: A to B, b2a: B to A)",
                                     elem_id="direction")
                side = gr.Slider(MIN_SIDE, demo.max_side, value=default_side, step=1,
                                 label="Output size: longer side at most (px)", elem_id="side")
                inputs = [upload, direction, side]
                if demo.styled:
                    inputs.append(gr.File(label="Style painting (optional: else the domain's mean style)",
                                          file_types=["image"], elem_id="style"))
                    inputs.append(gr.Slider(0, 2, value=1, step=0.05, elem_id="strength",
                                            label="Style strength (0: the mean style, 1: the painting's)"))
                button = gr.Button("Translate", variant="primary", elem_id="translate")
            with gr.Column():
                # No share button: sharing uploads to a third-party service.
                result = gr.Image(**_accepted(gr.Image.__init__, label="Result", type="filepath",
                                              interactive=False, format="png", elem_id="result",
                                              buttons=["download", "fullscreen"], show_share_button=False))
                download = gr.File(label="Download (PNG)", interactive=False, elem_id="download")
        button.click(run, inputs, [result, download])
    # One translation at a time, so that two uploads do not both hold a large image's activations.
    queue_args = _accepted(blocks.queue, default_concurrency_limit=1, concurrency_count=1, max_size=QUEUE_SIZE)
    if not {"default_concurrency_limit", "concurrency_count"} & set(queue_args):
        raise RuntimeError(f"gradio {gr.__version__} has no queue concurrency setting; install the version "
                           "pinned in constraints.txt")
    blocks.queue(**queue_args)
    return blocks


# Some gradio page templates load a script from a CDN (3.x: iframe-resizer, only used when the page is embedded
# in an iframe) and no option turns that off; as a guard across versions, such tags are removed from the HTML
# the server sends. The browser test checks that no request leaves the machine.
_EXTERNAL_TAG = re.compile(rb"<script[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>"
                           rb"|<link[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)


def _local_only_middleware(app) -> None:
    from starlette.responses import Response

    @app.middleware("http")
    async def strip_external_resources(request, call_next):
        response = await call_next(request)
        if not response.headers.get("content-type", "").startswith("text/html"):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(_EXTERNAL_TAG.sub(b"", body), status_code=response.status_code, headers=headers)


def build_app(demo: Demo, host: str = "127.0.0.1", port: int = 7860, default_side: int = DEFAULT_SIDE):
    """The ASGI app serving the demo at ``/``."""
    import fastapi

    theme = local_theme()  # gradio 3.x takes it in Blocks(), 4+ at mount time
    blocks = build_blocks(demo, default_side, theme)
    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    _local_only_middleware(app)
    return gr.mount_gradio_app(app, blocks, path="", **_accepted(
        gr.mount_gradio_app, gradio_api_url=f"http://{host}:{port}/", server_name=host, server_port=port,
        theme=theme, max_file_size=demo.max_upload_bytes, ssr_mode=False, pwa=False,
        mcp_server=False, enable_monitoring=False, show_error=False))


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          max_side: int = MAX_SIDE, default_side: int = DEFAULT_SIDE, max_upload_mb: float = MAX_UPLOAD_MB,
          max_pixels: int = MAX_PIXELS, checkpoint_b: str | Path | None = None) -> None:
    """Load ``checkpoint`` (and a reference ``checkpoint_b``) and serve the demo until interrupted."""
    import uvicorn

    demo = Demo(checkpoint, device, max_side, max_upload_mb, max_pixels, checkpoint_b=checkpoint_b)
    app = build_app(demo, host, port, default_side)
    if not _is_loopback(host):
        warnings.warn(f"serving on {host}: the demo has no login, anyone who can reach {host}:{port} can use it",
                      stacklevel=2)
    print(f"cyclestyle demo of {checkpoint} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
