"""Prove that training learns: train on ground-truth translation benchmarks and score their test sets.

Builds (or reuses) the benchmark of :mod:`cyclestyle.quality` for each painter of ``--painters`` under
``--out/<painter>`` (photos from scikit-image's bundled images; domain B and the test truth made by a fixed,
known painter of :mod:`cyclestyle.painters`; unpaired train folders from disjoint photo regions; held-out
test photos with their true paintings), trains a CycleGAN with the given config and overrides on each,
translates the test photos and prints PSNR, SSIM and a grid-artifact figure against the truth next to the
identity baseline, per painter and the mean over painters, and FID/KID of the translations against the
true paintings when the Inception weights are available. A development tool: it needs scikit-image (the
``dev`` extra).

    python -m cyclestyle.quality_check --steps 1500 --painters oil    # one painter, in this process
    python -m cyclestyle.quality_check --steps 1500                   # every painter, and the mean
    # several recipes x seeds x painters, one subprocess each, then markdown tables:
    python -m cyclestyle.quality_check --steps 1000 --seeds 0 1 model.ngf=16 model.ndf=16 loss.style_ab=0 \\
        --recipe lsgan= --recipe hinge=loss.gan_mode=hinge --recipe "ema=train.ema=true train.ema_decay=0.99"

Overrides given outside ``--recipe`` apply to every recipe; a recipe is ``NAME=`` followed by its own
``key=value`` overrides, separated by spaces or commas. The style loss is off in configs/base.yaml; turned
on, it needs the ImageNet VGG-19 weights (``loss.vgg_weights=random`` is the offline stand-in, and the output
labels it as such). In a source checkout ``python tools/quality_check.py`` is the same command. Layout of
``--out`` (default runs/quality/size<N>-data<data seed>, under the current folder): the benchmark
``<painter>/`` (the benchmark folders, ``benchmark.json``, ``runs/<recipe>-seed<k>/``, replaced on every run)
and ``results/`` (the JSON report of each run of a comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from cyclestyle import quality
from cyclestyle.config import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """``NAME=key=value key=value`` (or comma-separated) -> (NAME, [key=value, ...])."""
    name, sep, rest = text.partition("=")
    if not sep or not NAME_RE.match(name):
        raise argparse.ArgumentTypeError(f"--recipe {text!r}: expected NAME=[key=value ...], NAME of letters, "
                                         "digits and ._+- (e.g. --recipe hinge=loss.gan_mode=hinge)")
    overrides = [item for item in re.split(r"[\s,]+", rest.strip()) if item]
    for item in overrides:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"--recipe {name}: override {item!r} is not key=value")
    return name, overrides


def seed_value(text: str) -> int:
    # --seeds takes a list, so argparse gives it any key=value that follows it: say how to avoid that.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed (put key=value overrides before "
                                         "--seeds, e.g. ... loss.style_ab=0 --seeds 0 1)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides for every run (after the benchmark's own settings)")
    parser.add_argument("--config", default=None,
                        help="training config file (default: the schema defaults, which are configs/base.yaml's)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (half of them decay the LR)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop training earlier, with a checkpoint, once this much time has passed")
    parser.add_argument("--seed", type=int, default=0, help="training seed (single run)")
    parser.add_argument("--seeds", type=seed_value, nargs="+", default=None, help="training seeds (with --recipe)")
    parser.add_argument("--recipe", action="append", type=parse_recipe, default=[], metavar="NAME=[key=value ...]",
                        help="compare recipes: one subprocess per recipe and seed, then a markdown table")
    parser.add_argument("--name", default="run", help="name of a single run (its folder and report)")
    parser.add_argument("--painters", nargs="+", choices=quality.PAINTERS, default=list(quality.PAINTERS),
                        help="ground-truth painters to train and score on (more than one: one subprocess each)")
    parser.add_argument("--size", type=int, default=128, help="side of the benchmark's square images, px")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the benchmark's crops")
    parser.add_argument("--n-train", type=int, default=400, help="images in each of trainA and trainB")
    parser.add_argument("--n-test", type=int, default=64, help="held-out test photos")
    parser.add_argument("--out", type=Path, default=None,
                        help="benchmark and run folder (default: runs/quality/size<SIZE>-data<DATA_SEED>)")
    parser.add_argument("--reuse-data", action="store_true",
                        help="use the benchmark already in --out (it must have been built with the same options)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure and the run's details here")
    parser.add_argument("--figure", type=Path, default=None,
                        help="write a PNG of test photo | translation | truth per painter (first recipe, first seed)")
    parser.add_argument("--from-results", action="store_true",
                        help="train nothing: print the tables (and --figure) of the reports already in --out/results")
    parser.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="FID Inception weights file (default: $CYCLESTYLE_INCEPTION_WEIGHTS, torch hub's cache)")
    parser.add_argument("--random-inception", action="store_true",
                        help="FID plumbing tests only: an untrained Inception; the output says the numbers are not FID")
    return parser


def single_run(args, out: Path) -> dict:
    report = quality.run_quality(
        out, out / "runs" / f"{args.name}-seed{args.seed}", args.config, args.overrides, args.steps, args.seed,
        args.minutes, args.name, fid=not args.no_fid, inception_weights=args.inception_weights,
        random_inception=args.random_inception, fid_cache=out / "fid-cache")
    print(quality.format_run(report), flush=True)
    if args.json:
        quality.write_json(args.json, report)
        print(f"quality: report written to {args.json}")
    return report


def compare(args, out: Path, argv: list[str]) -> int:
    """Each recipe, painter and seed in its own process (a fresh accelerate state, no memory carried over)."""
    recipes = dict(args.recipe)
    if len(recipes) != len(args.recipe):
        raise SystemExit("quality_check: error: two --recipe options have the same name")
    recipes = recipes or {args.name: []}
    seeds = args.seeds if args.seeds is not None else [args.seed]
    passthrough = [*(["--config", args.config] if args.config else []), "--steps", str(args.steps),
                   "--size", str(args.size), "--data-seed", str(args.data_seed), "--n-train", str(args.n_train),
                   "--n-test", str(args.n_test),
                   "--out", str(out), "--reuse-data"]
    if args.minutes is not None:
        passthrough += ["--minutes", str(args.minutes)]
    if args.no_fid:
        passthrough.append("--no-fid")
    if args.inception_weights:
        passthrough += ["--inception-weights", args.inception_weights]
    if args.random_inception:
        passthrough.append("--random-inception")
    # The children import this package from wherever this process found it (an install or a source checkout).
    package_parent = str(Path(quality.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    groups: dict[str, list[dict]] = {name: [] for name in recipes}
    failures = []
    started = time.perf_counter()
    for name, recipe_overrides in recipes.items():
        for painter in args.painters:
            for seed in seeds:
                report_path = out / "results" / f"{name}-{painter}-seed{seed}.json"
                report_path.unlink(missing_ok=True)
                command = [sys.executable, "-m", "cyclestyle.quality_check", *passthrough, "--painters", painter,
                           "--name", name, "--seed", str(seed), "--json", str(report_path), *args.overrides,
                           *recipe_overrides]
                print(f"\nquality: recipe {name}, painter {painter}, seed {seed}: "
                      f"{' '.join(args.overrides + recipe_overrides) or '(base)'}", flush=True)
                rc = subprocess.run(command, env=env).returncode
                if rc != 0 or not report_path.is_file():
                    failures.append(f"{name} {painter} seed {seed} (exit code {rc})")
                    continue
                groups[name].append(json.loads(report_path.read_text()))
    table = quality.format_comparison(groups, {n: [*args.overrides, *o] for n, o in recipes.items()})
    print(f"\nquality: {len(recipes)} recipe(s) x {len(args.painters)} painter(s) x {len(seeds)} seed(s) in "
          f"{time.perf_counter() - started:.0f} s; "
          f"benchmark {out} ({args.size} px, {args.n_train} train images per domain, {args.n_test} test photos); "
          f"mean ± sample std across seeds\n")
    print(table)
    notes = sorted({note for rs in groups.values() for r in rs for note in r["notes"]}
                   | {f"FID: {r['fid']['note']}" for rs in groups.values() for r in rs if r["fid"].get("note")})
    for note in notes:
        print(f"\nNOTE: {note}")
    if args.figure:
        write_figure(groups, args.figure)
    if failures:
        print(f"\nquality: FAILED runs: {', '.join(failures)} (see their output above)")
    if args.json:
        quality.write_json(args.json, {"command": [sys.executable, *argv], "table": table, "recipes": recipes,
                                       "seeds": seeds, "failures": failures, "runs": groups})
        print(f"quality: reports written to {args.json}")
    return 1 if failures else 0


def write_figure(groups: dict[str, list[dict]], path: Path) -> None:
    """The --figure of a comparison: the first recipe's runs of its first seed, one column per painter."""
    first = next(iter(groups.values()), [])
    if first:
        seed = first[0]["seed"]
        print(f"quality: figure written to {quality.write_figure([r for r in first if r['seed'] == seed], path)}")


def from_results(args, out: Path) -> int:
    """The tables of a comparison from the JSON reports it left in ``out/results`` (e.g. of a stopped run)."""
    groups: dict[str, list[dict]] = {}
    recipes: dict[str, list[str]] = {}
    for path in sorted((out / "results").glob("*.json")):
        report = json.loads(path.read_text())
        if "painter" not in report:
            continue  # a comparison's summary file, not one run's report
        groups.setdefault(report["name"], []).append(report)
        recipes[report["name"]] = report["overrides"]
    if not groups:
        print(f"quality_check: error: no run reports in {out / 'results'}", file=sys.stderr)
        return 2
    print(quality.format_comparison(groups, recipes))
    if args.figure:
        write_figure(groups, args.figure)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)  # key=value overrides may sit between options
    out = args.out or Path("runs") / "quality" / f"size{args.size}-data{args.data_seed}"
    if args.from_results:
        return from_results(args, out)
    try:
        for painter in args.painters:
            quality.load_or_build(out / painter, args.size, args.data_seed, args.n_train, args.n_test,
                                  args.reuse_data, painter=painter)
        if args.recipe or len(args.painters) > 1:
            return compare(args, out, argv)
        single_run(args, out / args.painters[0])
        return 0
    except (quality.QualityError, ConfigError) as err:
        print(f"quality_check: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the named failures a user can fix: weights, data; one line, no traceback
        from cyclestyle.data import DataError
        from cyclestyle.evaluation import EvaluationError
        from cyclestyle.vgg import VGGWeightsError

        if isinstance(err, (VGGWeightsError, EvaluationError, DataError)):
            print(f"quality_check: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
