#!/usr/bin/env python
"""Diagnostic for the multi-painter benchmark (a script, not product code): train a style-coded model with
ORACLE codes and score it, to tell a weak style encoder from a recipe that cannot follow any code.

The B-domain encoder is replaced by the truth: every real B training image gets its painter's fixed code
(``sqrt(style_dim) * e_k`` for painter k, read from the training file's name), every A image one constant code.
The code-reconstruction term is off (``loss.lambda_code=0``: a fake has no painter to look up). The model is then
scored like ``python -m cyclestyle.quality_styles``, with painter k's code in place of its reference's: ``right``
(code k against truth k), ``wrong`` (code k+1) and ``plain_or_mean`` (the stored mean code). If even these codes are not
followed, the encoder is not what is in the way (README, "Style codes").

    python tools/style_oracle.py --bench runs/styles/data --out runs/oracle --seed 0 model.film_lr_mult=3

How: the dataset is wrapped so that each B sample's tensor is registered with its painter (its bytes' digest;
the training loop sees exactly these tensors), and the StyleEncoder's forward looks its input up there. The
patches are done here, on the imported modules, so that the product code carries no oracle path.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cyclestyle import data, nets, quality, quality_styles  # noqa: E402


class Oracle:
    """The patches: which painter each registered B tensor is, and the encoders' replacement forward."""

    def __init__(self, painters: list[str], style_dim: int):
        self.painters = painters
        self.codes = torch.eye(style_dim)[:len(painters)] * style_dim ** 0.5
        self.a_code = torch.eye(style_dim)[style_dim - 1:] * style_dim ** 0.5
        self.labels: dict[bytes, int] = {}
        self.lookups = {"hits": 0, "misses": 0}
        self.built = 0

    @staticmethod
    def key(x: torch.Tensor) -> bytes:
        return hashlib.md5(x.detach().float().cpu().contiguous().numpy().tobytes()).digest()

    @contextlib.contextmanager
    def installed(self):
        """The patches, undone on exit (for callers of :func:`main` from Python)."""
        oracle = self
        get_item, build, encode = data.UnpairedDataset.__getitem__, nets.build_generator, nets.StyleEncoder.forward

        def getitem(dataset, key):
            item = get_item(dataset, key)
            name = Path(dataset.files_b[key[1] % len(dataset.files_b)]).name
            oracle.labels[oracle.key(item["b"])] = oracle.painters.index(name.split("__")[0])
            return item

        def build_generator(model_cfg, *args):
            net = build(model_cfg, *args)
            if nets.is_styled(net):  # training builds G_ab (whose encoder reads B images) first, then G_ba
                net.encoder.oracle_domain = "B" if oracle.built % 2 == 0 else "A"
                oracle.built += 1
            return net

        def forward(encoder, x):
            learned = encode(encoder, x)  # computed so that the graph keeps its shape; its value is replaced
            if getattr(encoder, "oracle_domain", None) == "A":
                codes = oracle.a_code.expand(x.shape[0], -1)
            else:
                rows = []
                for image in x:
                    label = oracle.labels.get(oracle.key(image))
                    oracle.lookups["misses" if label is None else "hits"] += 1
                    rows.append(oracle.codes.mean(0) if label is None else oracle.codes[label])
                codes = torch.stack(rows)
            return codes.to(learned.device, learned.dtype) + 0 * learned

        data.UnpairedDataset.__getitem__ = getitem
        nets.build_generator = build_generator
        nets.StyleEncoder.forward = forward
        try:
            yield self
        finally:
            data.UnpairedDataset.__getitem__, nets.build_generator, nets.StyleEncoder.forward = get_item, build, encode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", type=Path, required=True, help="a benchmark from cyclestyle.quality_styles.build")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="after the benchmark's coded settings")
    args = p.parse_args(argv)
    manifest = args.bench / quality_styles.MANIFEST
    if not manifest.is_file():
        p.error(f"{manifest} not found: build the benchmark first (python -m cyclestyle.quality_styles --out DIR)")
    bench = json.loads(manifest.read_text())
    overrides = [*quality_styles.COMMON, *quality_styles.CODED, "loss.lambda_code=0", *args.overrides]
    from cyclestyle import config as config_lib

    try:  # the run's config, as quality_styles.run resolves it
        cfg = config_lib.load_config(None, [*quality.quality_overrides(args.bench, args.out / "oracle", bench["size"],
                                                                       args.steps, args.seed), *overrides])
    except config_lib.ConfigError as err:
        p.error(str(err))
    if cfg.model.style_code != "learned":
        p.error(f"model.style_code={cfg.model.style_code}: the oracle replaces a learned encoder's codes, so it "
                "needs model.style_code=learned")
    if cfg.loss.code_hue_jitter:
        p.error("loss.code_hue_jitter changes the images the encoder reads, which the oracle looks up by their "
                "bytes: leave it off here")
    oracle = Oracle(bench["painters"], cfg.model.style_dim)
    with oracle.installed():
        codes = {painter: oracle.codes[k:k + 1] for k, painter in enumerate(oracle.painters)}
        report = quality_styles.run(args.bench, args.out / "oracle", overrides, args.steps, args.seed, "oracle", codes)
    report["lookups"] = dict(oracle.lookups)
    report["mean"] = {f: float(np.mean([report["painters"][q][f] for q in bench["painters"]]))
                      for f in ("right", "wrong", "plain_or_mean")}
    path = args.out / f"oracle-seed{args.seed}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["mean"]), "->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
