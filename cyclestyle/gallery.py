"""A static HTML comparison gallery: each input photo beside its translation by one or more checkpoints.

``build_gallery(input_dir, output_dir, checkpoints)`` writes ``output_dir/index.html`` and the images it
shows, and nothing else:

- ``full/NNN/`` holds the full-size PNGs (the input, possibly downscaled to ``max_size``; one translation
  per checkpoint; the cycle reconstruction A->B->A when asked), ``thumbs/NNN/`` small JPEG thumbnails; the
  page shows the thumbnails, each a link to its full-size image. Links are relative, so the folder can be
  moved, zipped or served by any static server.
- The page is self-contained: inline CSS, no scripts, fonts or styles from any network. All text taken
  from outside (file and folder names, configs, metrics) is HTML-escaped; file names on disk are
  generated (``NNN``, ``ckpt-K``), never taken from the user's names.
- Per checkpoint it shows the FID/KID figures of ``cyclestyle evaluate`` when its report is found (the
  default ``RUN/eval/metrics.json``, or ``EXPORT-eval/metrics.json`` beside an export file, or a report
  given explicitly), and the configuration: ``RUN/config.yaml`` when the checkpoint is a run folder (or an
  export inside one), and always the model metadata stored in the safetensors export.

Translation goes through ``cyclestyle.translate.Translator``, the same code as ``cyclestyle translate``.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from PIL import Image

from cyclestyle.checkpoint import CheckpointError
from cyclestyle.data import DataError, ImageReadError, list_inputs, load_image

THUMB_SIZE = 256  # longer side of a thumbnail, px
METRICS_FILE = "metrics.json"  # the file name `cyclestyle evaluate` writes by default


@dataclass
class CheckpointInfo:
    """What the page shows about one checkpoint."""

    source: str  # as the user gave it
    label: str  # short display name
    slug: str  # file-name-safe id: ckpt-K
    export_file: Path
    metadata: dict  # from the safetensors export
    config_text: str | None = None  # RUN/config.yaml
    config_file: Path | None = None
    evaluation_file: Path | None = None
    evaluation: list[dict] | None = None  # the report's records
    evaluation_problem: str | None = None  # a report was found but could not be read


@dataclass
class Row:
    name: str  # the input's path relative to the input folder
    size: tuple[int, int]
    cells: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)  # (caption, full file, size)


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder of a checkpoint given as a run folder or as an export inside RUN/generators/."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    if path.parent.name == "generators":
        return path.parent.parent
    return None


def default_evaluation_file(checkpoint: str | Path) -> Path:
    from cyclestyle.evaluation import default_output_dir

    return default_output_dir(checkpoint) / METRICS_FILE


def read_evaluation(path: str | Path) -> list[dict]:
    """The records of a report written by ``cyclestyle evaluate`` (``evaluation.write_report``)."""
    data = json.loads(Path(path).read_text())
    records = data.get("results") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "fid" in r for r in records):
        raise ValueError("not a `cyclestyle evaluate` report (no 'results' list with 'fid' figures)")
    return records


def _label(checkpoint: Path) -> str:
    if checkpoint.is_dir():
        return checkpoint.resolve().name or str(checkpoint)
    if checkpoint.parent.name == "generators":  # RUN/generators/best.safetensors -> RUN/best
        return f"{checkpoint.parent.parent.resolve().name}/{checkpoint.stem}"
    return checkpoint.stem


def describe_checkpoint(checkpoint: str | Path, index: int, metadata: dict,
                        evaluation_file: str | Path | None = None) -> CheckpointInfo:
    """Label, config and evaluation figures of one checkpoint (``metadata``: the export's, as loaded)."""
    from cyclestyle.translate import generators_path

    path = Path(checkpoint)
    info = CheckpointInfo(str(checkpoint), _label(path), f"ckpt-{index}", generators_path(path), metadata)
    run = run_folder_of(path)
    if run is not None and (run / "config.yaml").is_file():
        info.config_file = run / "config.yaml"
        info.config_text = info.config_file.read_text(errors="replace")
    report = Path(evaluation_file) if evaluation_file else default_evaluation_file(path)
    if report.is_file():
        info.evaluation_file = report
        try:
            info.evaluation = read_evaluation(report)
        except (ValueError, OSError) as err:  # a broken report must not stop the gallery: say so on the page
            info.evaluation_problem = f"could not read {report}: {err}"
            warnings.warn(info.evaluation_problem, stacklevel=2)
    return info


def _save_pair(image: Image.Image, folder: Path, rel: str) -> tuple[int, int]:
    """Write ``full/REL.png`` and ``thumbs/REL.jpg``; returns the full image's size."""
    full = folder / "full" / f"{rel}.png"
    thumb = folder / "thumbs" / f"{rel}.jpg"
    full.parent.mkdir(parents=True, exist_ok=True)
    thumb.parent.mkdir(parents=True, exist_ok=True)
    image.save(full, "PNG")
    small = image.copy()
    small.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    small.save(thumb, "JPEG", quality=85)
    return image.size


def build_gallery(input_dir: str | Path, output_dir: str | Path, checkpoints: Sequence[str | Path],
                  direction: str = "a2b", reconstruction: bool = False, max_size: int | None = 512,
                  limit: int | None = None, device: str = "auto",
                  evaluation_files: Mapping[str, str | Path] | None = None, title: str | None = None,
                  checkpoint_b: str | Path | None = None, styles: Sequence[str | Path] = (),
                  strengths: Sequence[float] = (1.0,)) -> Path:
    """Translate every image of ``input_dir`` with each checkpoint and write ``output_dir/index.html``.

    ``direction``: a2b or b2a; ``reconstruction``: also translate back (A->B->A); ``max_size``: inputs are
    downscaled so their longer side is at most this (None: original size); ``limit``: the first N readable images
    only; ``evaluation_files``: checkpoint (as given) -> report, overriding the default location;
    ``checkpoint_b``: with one reference ``.pth`` checkpoint, the G_B file of its b2a direction; ``styles``: style
    paintings: each style-coded checkpoint gets one column per painting (photos x styles), plain ones one column;
    ``strengths``: one column per painting and style strength (``translate --style-strength``).
    Unreadable images are skipped and listed on the page. Returns the page's path.
    """
    from cyclestyle.translate import Translator, resized

    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be a2b or b2a, got {direction!r}")
    if not checkpoints:
        raise CheckpointError("give at least one --checkpoint (a run folder or a generators file)")
    if checkpoint_b is not None and len(checkpoints) != 1:
        raise CheckpointError(f"--checkpoint-b {checkpoint_b} pairs with one --checkpoint, not {len(checkpoints)}")
    out = Path(output_dir)
    # An output folder inside the input folder: its images (from an earlier run) are not inputs.
    inputs = list_inputs(input_dir, "--input", folder_only=True, require=True)
    files = [f for f, _ in inputs if out.resolve() not in f.resolve().parents]
    back = "b2a" if direction == "a2b" else "a2b"
    # Every checkpoint is loaded before anything is translated: a wrong path fails in a second.
    translators, infos = [], []
    for k, ckpt in enumerate(checkpoints):
        forward = Translator.load(ckpt, direction, device, path_b=checkpoint_b)
        backward = Translator.load(ckpt, back, device, path_b=checkpoint_b) if reconstruction else None
        translators.append((forward, backward))
        infos.append(describe_checkpoint(ckpt, k, forward.meta, (evaluation_files or {}).get(str(ckpt))))
    _dedupe_labels(infos)
    try:
        paintings = [(Path(s).stem, load_image(s)) for s in styles]
    except ImageReadError as err:
        raise DataError(f"--style-image: {err}") from None
    strengths = list(strengths) or [1.0]
    dialled = strengths != [1.0]  # column names and files say the strength only when one is asked for

    def style_columns(forward: Translator) -> list[tuple[str, str, object]]:
        return [(f", style {name}" + (f" at {s:g}" if dialled else ""), f"-style{j}" + (f"-s{k}" if dialled else ""),
                 forward.style_code(painting, strength=s))
                for j, (name, painting) in enumerate(paintings) for k, s in enumerate(strengths)]

    # per checkpoint: (column suffix, slug suffix, code); plain models and no styles: one column, no code
    columns = [style_columns(forward) if forward.styled and paintings else [("", "", None)]
               for forward, _ in translators]

    out.mkdir(parents=True, exist_ok=True)
    root = Path(input_dir).expanduser()
    rows, skipped = [], []
    for i, file in enumerate(files):
        if limit and len(rows) >= limit:
            break
        try:
            image = resized(load_image(file), None, max_size)
        except ImageReadError as err:
            skipped.append((str(file.relative_to(root)), str(err)))
            warnings.warn(f"skipped {err}", stacklevel=2)
            continue
        rel = f"{i:03d}"
        row = Row(str(file.relative_to(root)), image.size)
        row.cells.append(("input", f"{rel}/input", _save_pair(image, out, f"{rel}/input")))
        for info, (forward, backward), styled in zip(infos, translators, columns):
            for suffix, slug, code in styled:
                translated = forward(image, style=code)
                row.cells.append((f"{info.label} ({direction}{suffix})", f"{rel}/{info.slug}{slug}",
                                  _save_pair(translated, out, f"{rel}/{info.slug}{slug}")))
                if backward is not None:
                    name = f"{rel}/{info.slug}{slug}-reconstruction"
                    row.cells.append((f"{info.label} ({direction}{suffix} then {back})", name,
                                      _save_pair(backward(translated), out, name)))
        rows.append(row)
    page = out / "index.html"
    tmp = page.with_name(f".{page.name}.tmp")
    tmp.write_text(render_page(rows, infos, skipped, title or f"cyclestyle gallery: {root.resolve().name}", root,
                               direction, reconstruction), encoding="utf-8")
    os.replace(tmp, page)
    return page


def _dedupe_labels(infos: list[CheckpointInfo]) -> None:
    seen: dict[str, int] = {}
    for info in infos:
        seen[info.label] = seen.get(info.label, 0) + 1
        if seen[info.label] > 1:
            info.label = f"{info.label} #{seen[info.label]}"


# --- HTML --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 1.5rem; color: #222; background: #fafafa; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.ckpt { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8rem 1rem; margin: .8rem 0; }
.ckpt code { word-break: break-all; }
table.metrics { border-collapse: collapse; margin: .5rem 0; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
.warn { color: #a40000; }
pre { background: #f3f3f3; padding: .6rem; overflow-x: auto; font-size: .8rem; max-height: 30rem; }
.grid { border-collapse: collapse; }
.grid th { font-weight: 600; padding: .3rem; position: sticky; top: 0; background: #fafafa; }
.grid td { vertical-align: top; padding: .3rem; text-align: center; }
.grid td.name { text-align: left; max-width: 12rem; word-break: break-all; font-size: .85rem; }
.grid img { display: block; max-width: 256px; max-height: 256px; border: 1px solid #ccc; background: #fff; }
.size { color: #777; font-size: .75rem; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(value, fmt: str = ".3f", scale: float = 1.0) -> str:
    try:
        return format(float(value) * scale, fmt)
    except (TypeError, ValueError):
        return "?"


def _evaluation_html(info: CheckpointInfo) -> str:
    if info.evaluation_problem:
        return f'<p class="warn">{_e(info.evaluation_problem)}</p>'
    if info.evaluation is None:
        return ("<p>No FID/KID figures: no evaluation report at "
                f"<code>{_e(default_evaluation_file(info.source))}</code> (run <code>cyclestyle evaluate</code>).</p>")
    lines = ['<table class="metrics"><tr><th>direction</th><th>FID</th><th>KID &times; 10<sup>3</sup></th>'
             "<th>images (generated vs real)</th><th>step</th><th>evaluated</th></tr>"]
    for r in info.evaluation:
        lines.append(f"<tr><td>{_e(r.get('direction') or '')}</td><td>{_e(_figure(r.get('fid')))}</td>"
                     f"<td>{_e(_figure(r.get('kid_mean'), scale=1e3))} &plusmn; "
                     f"{_e(_figure(r.get('kid_std'), scale=1e3))}</td>"
                     f"<td>{_e(r.get('n_generated', '?'))} vs {_e(r.get('n_reference', '?'))}</td>"
                     f"<td>{_e(r.get('checkpoint_step', ''))}</td><td>{_e(r.get('timestamp', ''))}</td></tr>")
    lines.append("</table>")
    first = info.evaluation[0]
    lines.append(f"<p>Features: {_e(first.get('library', '?'))} {_e(first.get('library_version', ''))} "
                 f"{_e(first.get('feature_extractor', ''))}; report <code>{_e(info.evaluation_file)}</code>. "
                 "Compare FIDs only between evaluations on the same test set (FID is biased upward at small N).</p>")
    if first.get("weights_path") == "random":
        lines.append('<p class="warn">Randomly initialised Inception: these numbers are NOT FID/KID.</p>')
    return "\n".join(lines)


def _checkpoint_html(info: CheckpointInfo) -> str:
    meta = info.metadata
    model = json.dumps(meta.get("model", {}), indent=2, sort_keys=True, default=str)
    parts = [f'<div class="ckpt" id="{_e(info.slug)}"><h3>{_e(info.label)}</h3>',
             f"<p><code>{_e(info.source)}</code> &middot; export <code>{_e(info.export_file)}</code> &middot; "
             f"step {_e(meta.get('step', '?'))}{' &middot; EMA weights' if meta.get('ema') == 'true' else ''}</p>",
             _evaluation_html(info)]
    if info.config_text is not None:
        parts.append(f"<details><summary>config (<code>{_e(info.config_file)}</code>)</summary>"
                     f"<pre>{_e(info.config_text)}</pre></details>")
    parts.append(f"<details><summary>model stored in the export</summary><pre>{_e(model)}</pre></details>")
    if "validation" in meta:
        parts.append("<details><summary>validation scores that made this export best</summary>"
                     f"<pre>{_e(json.dumps(meta['validation'], indent=2, default=str))}</pre></details>")
    parts.append("</div>")
    return "\n".join(parts)


def render_page(rows: list[Row], infos: list[CheckpointInfo], skipped: list[tuple[str, str]], title: str,
                input_dir: Path, direction: str, reconstruction: bool) -> str:
    head = ["<th>image</th>", "<th>input</th>"]
    for info in infos:
        head.append(f"<th>{_e(info.label)}</th>")
        if reconstruction:
            head.append(f"<th>{_e(info.label)} reconstruction</th>")
    if rows and len(rows[0].cells) != len(head) - 1:  # style columns: name them by their captions
        head = ["<th>image</th>"] + [f"<th>{_e(caption)}</th>" for caption, _, _ in rows[0].cells]
    body = []
    for row in rows:
        cells = [f'<td class="name">{_e(row.name)}</td>']
        for caption, rel, (w, h) in row.cells:
            cells.append(f'<td><a href="full/{_e(rel)}.png"><img src="thumbs/{_e(rel)}.jpg" '
                         f'alt="{_e(row.name)}: {_e(caption)}" title="{_e(caption)}"></a>'
                         f'<div class="size">{w}&times;{h}</div></td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    skipped_html = ""
    if skipped:
        items = "".join(f"<li><code>{_e(name)}</code>: {_e(why)}</li>" for name, why in skipped)
        skipped_html = f'<h2>Skipped ({len(skipped)} unreadable)</h2><ul class="warn">{items}</ul>'
    what = f"{direction} translation" + (" and the reconstruction back" if reconstruction else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p>{len(rows)} image(s) from <code>{_e(input_dir)}</code>, {_e(what)} by {len(infos)} checkpoint(s).
Click a thumbnail for the full-size image.</p>
<h2>Checkpoints</h2>
{"".join(_checkpoint_html(info) for info in infos)}
<h2>Images</h2>
<table class="grid">
<thead><tr>{"".join(head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{skipped_html}
</body>
</html>
"""
