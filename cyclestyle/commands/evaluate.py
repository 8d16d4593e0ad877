"""``cyclestyle evaluate``: FID and KID of a trained generator on held-out test folders."""

import argparse

from cyclestyle.commands import add_checkpoint_arg, positive_int


def add_metric_args(p: argparse.ArgumentParser) -> None:
    """Options shared with ``cyclestyle fid``."""
    p.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="local Inception weights (weights-inception-2015-12-05-6726825d.pth); unset: "
                        "$CYCLESTYLE_INCEPTION_WEIGHTS, else torch hub's cache (downloaded there if missing). "
                        "'random' = untrained network, for timing only")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature cache of image folders; unset: $CYCLESTYLE_FID_CACHE or "
                        "~/.cache/cyclestyle/fid-features")
    p.add_argument("--no-cache", action="store_true", help="always recompute the features")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000,
                   help="KID: images per subset (capped at the smaller side)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per Inception batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="write every figure and the protocol to FILE (evaluate: to OUTPUT/metrics.json if unset)")


def cache_dir(args: argparse.Namespace):
    from cyclestyle.evaluation import default_cache_dir

    return None if args.no_cache else (args.cache_dir or default_cache_dir())


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="FID and KID of a generator on test folders",
                       description="Translates the test images of each direction (PNG) and compares them with "
                                   "the other domain's test images by FID and KID (TF-reference Inception, "
                                   "torch-fidelity).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_checkpoint_arg(p)
    p.add_argument("--test-a", required=True, metavar="DIR", help="held-out images of domain A")
    p.add_argument("--test-b", required=True, metavar="DIR", help="held-out images of domain B")
    p.add_argument("--direction", choices=("both", "a2b", "b2a"), default="both")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="translations go to DIR/a2b, DIR/b2a, figures to DIR/metrics.json; unset: RUN_DIR/eval, "
                        "or EXPORT-eval/ beside an export file")
    p.add_argument("--no-gallery", action="store_true",
                   help="do not write the HTML gallery (first 16 test images, 256 px) beside the JSON")
    add_metric_args(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cyclestyle import evaluation

    out = Path(args.output) if args.output else evaluation.default_output_dir(args.checkpoint)
    json_path = Path(args.json) if args.json else out / "metrics.json"
    records = evaluation.evaluate_checkpoint(
        args.checkpoint, args.test_a, args.test_b, args.direction, out, json_path, weights=args.inception_weights,
        checkpoint_b=args.checkpoint_b,
        cache_dir=cache_dir(args), kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
        batch_size=args.batch_size, device=args.device, progress=True)
    print(evaluation.format_metrics(records))
    for r in records:
        if r["n_source_skipped"] or r["reference_skipped"]:
            print(f"{r['direction']}: skipped {r['n_source_skipped']} unreadable test input(s) and "
                  f"{len(r['reference_skipped'])} reference file(s); listed in {json_path}")
    print(f"translations in {out}; figures in {json_path}")
    if not args.no_gallery:
        from cyclestyle.gallery import build_gallery

        d = records[0]["direction"]
        page = build_gallery(args.test_a if d == "a2b" else args.test_b, json_path.parent / "gallery",
                             [args.checkpoint], direction=d, max_size=256, limit=16, device=args.device,
                             evaluation_files={args.checkpoint: json_path}, checkpoint_b=args.checkpoint_b)
        print(f"gallery: {page}")
    return 0
