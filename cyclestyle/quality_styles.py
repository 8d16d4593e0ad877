"""The multi-painter ground-truth benchmark: does a style-coded model follow the painting it is given?

Like :mod:`cyclestyle.quality`, but domain B mixes several painters: the B training crops are painted by
painter ``i % P`` in turn. Every test photo has its truth under each painter, and each painter has one
reference painting of other content (a B crop, from cells no test crop comes from). A model is scored on
each painter k:

- ``plain``: its translation (a plain CycleGAN has one style: the blend of the painters) vs truth_k;
- ``right``: translated with the code of painter k's reference vs truth_k;
- ``wrong``: with the code of another painter's reference vs truth_k (a model that ignores the code scores
  the same as ``right``);
- ``mean``: with the stored mean code vs truth_k (what every command does without a style image).

Run: ``python -m cyclestyle.quality_styles --out runs/styles --steps 600`` trains a plain and a coded model on
the same data with the same step budget and prints the table (README, "Style codes").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from cyclestyle import quality

MANIFEST = "styles.json"
COMMON = ("model.ngf=16", "model.ndf=16", "data.num_workers=0")  # the single-painter sweep's narrow networks
# The coded recipe measured best (README, "Style codes"): no style loss (a random-VGG style loss of weight 0.3 or
# 1 with lambda_code 1 lost 4 dB), the default code term.
CODED = ("model.style_code=learned",)


def build(out: str | Path, painters: Sequence[str] = quality.PAINTERS, size: int = 128, seed: int = 0,
          n_train: int = 400, n_test: int = 64) -> dict:
    """Write the benchmark under ``out``: trainA, trainB (painters in turn), testA, testA_painted/PAINTER/,
    references/PAINTER.png; returns the manifest."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    # The single-painter benchmark's crops (same seed, same photos), built once per painter into scratch folders.
    scratch = out / "scratch"
    manifests = {p: quality.build_benchmark(scratch / p, size, seed, n_train, n_test, painter=p) for p in painters}
    for split in ("trainA", "trainB", "testA", "references", *(f"testA_painted/{p}" for p in painters)):
        (out / split).mkdir(parents=True, exist_ok=True)
    first = scratch / painters[0]
    for file in sorted((first / "trainA").glob("*.png")):
        shutil.copy(file, out / "trainA" / file.name)
    for file in sorted((first / "testA").glob("*.png")):
        shutil.copy(file, out / "testA" / file.name)
    b_names = sorted(p.name for p in (first / "trainB").glob("*.png"))
    references = {}
    for i, name in enumerate(b_names):
        painter = painters[i % len(painters)]
        shutil.copy(scratch / painter / "trainB" / name, out / "trainB" / f"{painter}__{name}")
    for k, painter in enumerate(painters):
        # the reference: of the B crops this painter painted in trainB, the one with the most contrast (a mostly
        # flat sky would show little of a style); B and test crops come from different cells of each photo, so
        # it is of other content than every test photo
        name = max(b_names[k::len(painters)],
                   key=lambda n: (quality.read_rgb(scratch / painter / "trainB" / n).std(), n))
        shutil.copy(scratch / painter / "trainB" / name, out / "references" / f"{painter}.png")
        references[painter] = name
        for file in sorted((scratch / painter / "testA_painted").glob("*.png")):
            shutil.copy(file, out / "testA_painted" / painter / file.name)
    shutil.rmtree(scratch)
    manifest = {"size": size, "seed": seed, "n_train": n_train, "n_test": n_test, "painters": list(painters),
                "references": references, "single_painter_version": quality.BENCHMARK_VERSION,
                "counts": {p: manifests[p]["counts"] for p in painters}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def score_model(bench_dir: str | Path, run_dir: str | Path, codes: dict | None = None,
                strengths: Sequence[float] = ()) -> dict:
    """PSNR per painter of the model in ``run_dir`` (see the module docstring for the four figures). ``codes``
    (painter -> a (1, style_dim) code) stand in for the references' codes (tools/style_oracle.py's true codes).
    ``strengths``: also score right and wrong with each reference's code at these style strengths (``translate
    --style-strength``), under ``by_strength``."""
    from PIL import Image

    from cyclestyle.translate import Translator

    bench_dir = Path(bench_dir)
    manifest = json.loads((bench_dir / MANIFEST).read_text())
    painters = manifest["painters"]
    translator = Translator.load(run_dir, device="cpu", precision="fp32")
    photos = {f.name: Image.fromarray(quality.read_rgb(f)) for f in sorted((bench_dir / "testA").glob("*.png"))}
    truth = {p: {n: quality.read_rgb(bench_dir / "testA_painted" / p / n) for n in photos} for p in painters}
    identity = {p: quality.score([(np.asarray(photos[n]), truth[p][n]) for n in photos])["psnr"] for p in painters}
    strengths = [float(s) for s in strengths if float(s) != 1.0] if translator.styled else []

    # Each style's translations once: the plain / mean-code ones serve every painter's row, and painter j's
    # reference serves both its own "right" and the "wrong" of the painter before it.
    styles: dict[tuple | None, object] = {None: None}
    if translator.styled:
        refs = codes if codes is not None else {
            p: translator.style_code(Image.open(bench_dir / "references" / f"{p}.png").convert("RGB"))
            for p in painters}
        for strength in (1.0, *strengths):
            styles.update({(p, strength): translator.style_code(code, strength=strength) for p, code in refs.items()})
    translated = {key: {n: np.asarray(translator(photo, style=code)) for n, photo in photos.items()}
                  for key, code in styles.items()}

    def psnr_against(painter: str, style: tuple | None) -> float:
        return quality.score([(translated[style][n], truth[painter][n]) for n in photos])["psnr"]

    rows = {}
    for k, painter in enumerate(painters):
        row = {"identity": identity[painter], "plain_or_mean": psnr_against(painter, None)}
        if translator.styled:
            wrong = painters[(k + 1) % len(painters)]
            row.update(right=psnr_against(painter, (painter, 1.0)), wrong=psnr_against(painter, (wrong, 1.0)),
                       wrong_painter=wrong)
            if strengths:
                row["by_strength"] = {f"{s:g}": {"right": psnr_against(painter, (painter, s)),
                                                 "wrong": psnr_against(painter, (wrong, s))} for s in strengths}
        rows[painter] = row
    report = {"styled": translator.styled, "painters": rows}
    if translator.styled and codes is None:  # the B training crops' codes, grouped by the painter that made them
        report["code_separation"] = code_separation({p: translator.style_code(
            [Image.open(f).convert("RGB") for f in sorted((bench_dir / "trainB").glob(f"{p}__*.png"))])
            for p in painters})
    return report


def code_separation(codes: dict) -> dict:
    """How well style codes tell the painters apart: ``codes`` maps painter -> (N, style_dim) codes of its
    paintings. Per painter, the share of its codes nearest its own centroid (of all painters' centroids) and
    the mean distance of its codes to that centroid (``spread``); per pair, the distance between centroids. A
    pair whose centroid distance is below the spreads is one style to the decoder."""
    import torch

    names = list(codes)
    centroids = torch.stack([codes[p].float().mean(0) for p in names])
    nearest = {p: torch.cdist(codes[p].float(), centroids).argmin(1) for p in names}
    return {"accuracy": {p: float((nearest[p] == k).float().mean()) for k, p in enumerate(names)},
            "spread": {p: float((codes[p].float() - centroids[k]).norm(dim=1).mean()) for k, p in enumerate(names)},
            "centroid_distance": {f"{a}-{b}": float((centroids[i] - centroids[j]).norm())
                                  for i, a in enumerate(names) for j, b in enumerate(names) if i < j}}


def run(bench_dir: str | Path, run_dir: str | Path, overrides: Sequence[str], steps: int, seed: int = 0,
        name: str = "run", codes: dict | None = None, strengths: Sequence[float] = ()) -> dict:
    """Train on the benchmark with ``overrides`` (after the benchmark's own settings), score (with ``codes`` in
    place of the references', and at ``strengths``, see :func:`score_model`), report."""
    from cyclestyle import config as config_lib
    from cyclestyle.training import train

    bench_dir, run_dir = Path(bench_dir), Path(run_dir)
    size = json.loads((bench_dir / MANIFEST).read_text())["size"]
    cfg = config_lib.load_config(None, [*quality.quality_overrides(bench_dir, run_dir, size, steps, seed),
                                        *overrides])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    return {"name": name, "overrides": list(overrides), "steps": steps, "seed": seed,
            "train_seconds": round(seconds, 1), **score_model(bench_dir, run_dir, codes, strengths),
            "machine": quality.machine()}


def write_figure(bench_dir: str | Path, run_dir: str | Path, path: str | Path, n_images: int = 2) -> Path:
    """A PNG: the first row shows each painter's reference painting; then per test photo the photo, its
    translation with each reference's code, and its truth under each painter."""
    from PIL import Image

    from cyclestyle.translate import Translator

    bench_dir = Path(bench_dir)
    painters = json.loads((bench_dir / MANIFEST).read_text())["painters"]
    translator = Translator.load(run_dir, device="cpu", precision="fp32")
    refs = [quality.read_rgb(bench_dir / "references" / f"{p}.png") for p in painters]
    names = sorted(f.name for f in (bench_dir / "testA").glob("*.png"))
    names = [names[i * len(names) // n_images] for i in range(n_images)]  # spread over the photos
    blank = np.full_like(refs[0], 255)
    rows = [np.concatenate([blank, *refs, *[blank] * len(painters)], axis=1)]
    for name in names:
        photo = quality.read_rgb(bench_dir / "testA" / name)
        translated = [np.asarray(translator(Image.fromarray(photo), style=Image.fromarray(r))) for r in refs]
        truths = [quality.read_rgb(bench_dir / "testA_painted" / p / name) for p in painters]
        rows.append(np.concatenate([photo, *translated, *truths], axis=1))
    grid = np.concatenate(rows, axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


def format_table(reports: Sequence[dict]) -> str:
    """Markdown: per painter, PSNR in dB of each figure of each report."""
    painters = list(reports[0]["painters"])
    lines = ["| model | figure | " + " | ".join(painters) + " | mean |", "|---|---|" + "---|" * (len(painters) + 1)]
    for report in reports:
        figures = ["identity", "plain_or_mean"] + (["right", "wrong"] if report["styled"] else [])
        for figure in figures:
            values = [report["painters"][p][figure] for p in painters]
            label = {"plain_or_mean": "mean code" if report["styled"] else "translation"}.get(figure, figure)
            lines.append(f"| {report['name']} | {label} | " + " | ".join(f"{v:.2f}" for v in values)
                         + f" | {np.mean(values):.2f} |")
        for strength in report["painters"][painters[0]].get("by_strength", {}):
            for figure in ("right", "wrong"):
                values = [report["painters"][p]["by_strength"][strength][figure] for p in painters]
                lines.append(f"| {report['name']} | {figure}, strength {strength} | "
                             + " | ".join(f"{v:.2f}" for v in values) + f" | {np.mean(values):.2f} |")
    return "\n".join(lines)


def format_separation(report: dict) -> str:
    """One line on how the coded model's codes tell the painters apart (:func:`code_separation`), or ''."""
    sep = report.get("code_separation")
    if not sep:
        return ""
    accuracy = ", ".join(f"{p} {v:.0%}" for p, v in sep["accuracy"].items())
    distances = ", ".join(f"{k} {v:.2f}" for k, v in sep["centroid_distance"].items())
    spreads = ", ".join(f"{p} {v:.2f}" for p, v in sep["spread"].items())
    return f"{report['name']} codes: nearest own centroid {accuracy}; centroid distances {distances}; spreads {spreads}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cyclestyle.quality_styles", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/styles"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the benchmark's crops")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--only", choices=("plain", "coded"), default=None, help="train one of the two models")
    parser.add_argument("--reuse-data", action="store_true", help="keep an existing benchmark under --out/data")
    parser.add_argument("--figure", type=Path, default=None, help="write the coded model's picture here (PNG)")
    parser.add_argument("--strength", type=float, action="append", default=[], metavar="S",
                        help="coded models: also score the references at this style strength (repeatable)")
    parser.add_argument("--score", type=Path, default=None, metavar="RUN",
                        help="score this trained run folder on --out/data instead of training (the report is "
                             "printed and written to RUN/styles-report.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="for both models, after the benchmark's")
    args = parser.parse_args(argv)
    data = args.out / "data"
    if args.score is not None:
        if not (data / MANIFEST).is_file():
            parser.error(f"--score needs the benchmark at {data} (build it with a training run of this module)")
        if not args.score.exists():
            parser.error(f"--score {args.score} does not exist (a run folder or a generators file)")
        report = {"name": args.score.name, **score_model(data, args.score, strengths=args.strength),
                  "machine": quality.machine()}
        target = (args.score if args.score.is_dir() else args.score.parent) / "styles-report.json"
        target.write_text(json.dumps(report, indent=1) + "\n")
        print(format_table([report]))
        print(format_separation(report))
        return 0
    if not (args.reuse_data and (data / MANIFEST).is_file()):
        build(data, size=args.size, seed=args.data_seed, n_train=args.n_train, n_test=args.n_test)
    reports = []
    for name, extra in (("plain", ()), ("coded", CODED)):
        if args.only and name != args.only:
            continue
        report = run(data, args.out / name, [*COMMON, *extra, *args.overrides], args.steps, args.seed, name,
                     strengths=args.strength)
        (args.out / f"{name}-seed{args.seed}.json").write_text(json.dumps(report, indent=1) + "\n")
        reports.append(report)
        print(format_table([report]), flush=True)
        if report.get("code_separation"):
            print(format_separation(report), flush=True)
        if name == "coded" and args.figure:
            write_figure(data, args.out / name, args.figure)
    print(format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
