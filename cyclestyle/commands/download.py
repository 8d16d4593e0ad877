"""``cyclestyle download``: the reference CycleGAN's published generators and datasets."""

import argparse


def add_parser(sub, name: str) -> None:
    from cyclestyle.download import DATASETS, MODELS

    p = sub.add_parser(name, help="download a published CycleGAN model or a standard unpaired dataset",
                       description="Fetches what the reference CycleGAN publishes (efrosgans.eecs.berkeley.edu), "
                                   "resuming an interrupted download, and prints the sha256 of what came.",
                       epilog=f"models: {', '.join(MODELS)}.  datasets: {', '.join(DATASETS)}.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("kind", choices=("model", "dataset"),
                   help="model: NAME.pth, imported as NAME.safetensors for translate; dataset: NAME.zip, "
                        "extracted to NAME/trainA, trainB, testA, testB")
    p.add_argument("name", metavar="NAME", help="a name listed below (e.g. style_monet, monet2photo)")
    p.add_argument("--output", default=None, metavar="DIR", help="where it goes (default: models/ or datasets/)")
    p.add_argument("--url", default=None, help="fetch from this address instead (a mirror)")
    p.add_argument("--sha256", default=None, metavar="HEX", help="refuse the file unless its sha256 is this")


def run(args: argparse.Namespace) -> int:
    from cyclestyle.download import download_dataset, download_model

    if args.kind == "model":
        output, record = download_model(args.name, args.output or "models", args.url, args.sha256)
        print(f"{record['file']}: sha256 {record['sha256']} (from {record['url']})")
        print(f"wrote {output} ({record['model']['generator']}, ngf {record['model']['ngf']})")
        print(f"next: cyclestyle translate --checkpoint {output} --input PHOTOS --output OUT --size 256")
        return 0
    folder, record = download_dataset(args.name, args.output or "datasets", args.url, args.sha256)
    if record.get("already_there"):
        print(f"{folder} is already there (downloaded {record['downloaded']}, sha256 {record['sha256']})")
    else:
        print(f"{args.name}.zip: sha256 {record['sha256']} ({record['bytes']} bytes from {record['url']})")
        print(f"extracted to {folder}")
    if record["missing_folders"]:
        print(f"note: {folder} has no {', '.join(record['missing_folders'])} (not an unpaired A/B dataset)")
    else:
        print(f"next: cyclestyle train data.root_a={folder}/trainA data.root_b={folder}/trainB")
    return 0
