"""``cyclestyle fid``: FID and KID between two image folders (or saved feature files)."""

import argparse

from cyclestyle.commands.evaluate import add_metric_args, cache_dir


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(name, help="FID and KID between two image folders",
                       description="FID and KID between two folders of images (any depth, any size; PNG for "
                                   "generated images) or .npz feature files written by cyclestyle's cache.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs=2, metavar="DIR|FEATURES.npz")
    add_metric_args(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from cyclestyle import evaluation

    record = evaluation.compare_folders(
        *args.paths, weights=args.inception_weights, cache_dir=cache_dir(args), kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size, batch_size=args.batch_size, device=args.device, progress=True)
    print(evaluation.format_metrics([record]))
    for i in (1, 2):
        if record[f"skipped_{i}"]:
            print(f"{record[f'path_{i}']}: skipped {len(record[f'skipped_{i}'])} unreadable file(s)", file=sys.stderr)
        if record[f"features_file_{i}"]:
            print(f"features of {record[f'path_{i}']}: {record[f'features_file_{i}']}"
                  + (" (cached)" if record[f"cache_hit_{i}"] else ""))
    if args.json:
        print(f"figures in {evaluation.write_report([record], args.json)}")
    return 0
