"""Validation during training: FID/KID of a fixed held-out subset every N steps, and the ``best`` export.

The subset is the first ``validation.num_images`` images (sorted paths) of ``validation.root_a`` and
``validation.root_b``, resized and centre-cropped like the training images (no randomness), so every
validation of a run, and of a resumed run, scores the same pictures. a2b scores translated A against real
B; b2a the reverse.

Distributed runs: each process translates and featurises its own share of the subset (image ``i`` goes to
rank ``i mod world``), the features are gathered to every rank with their subset indices and put back in
subset order, and the main process alone computes the metrics (the 2048x2048 matrix square root is the
expensive part) and writes the ``best`` export. So the numbers do not depend on the number of processes,
and nothing waits on a collective the other ranks never reach: every rank makes the same two gathers.
The features of the real images are computed once per run (they don't change) and kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cyclestyle import evaluation
from cyclestyle.config import Config
from cyclestyle.data import ImageReadError, build_transform, find_images, load_image

DIRECTIONS = {"a2b": ("a", "b", "gen_ab"), "b2a": ("b", "a", "gen_ba")}  # source, reference, generator


def load_subset(root: str | Path, cfg: Config, label: str) -> torch.Tensor:
    """The first ``validation.num_images`` readable images of ``root`` as (N, 3, crop, crop) in [-1, 1]."""
    from cyclestyle.data import DataError

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{label} folder not found: {root} (a folder of held-out images, or validation.every=0)")
    transform = build_transform(cfg.data.crop_size, cfg.data.load_size, cfg.data.resize, flip=False, train=False)
    images = []
    for path in find_images(root):
        try:
            # The same decode (JPEG draft size) and resize as training: the subset must look like what
            # the generators were trained on, or FID/KID would score a resampling difference.
            images.append(transform(image=np.asarray(load_image(path, cfg.data.load_size)))["image"])
        except ImageReadError:
            continue  # a broken file in a validation folder: the next one takes its place
        if len(images) == cfg.validation.num_images:
            break
    if len(images) < 2:
        raise DataError(f"{label} folder {root} holds {len(images)} readable image(s); FID/KID need at least 2")
    return torch.stack(images)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats to the uint8 images Inception takes: the rounding ``translate`` uses to save PNGs."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


@dataclass
class Best:
    """The best validation score so far; saved in checkpoints so that a resumed run keeps it."""

    metric: str
    score: float = float("inf")
    step: int = -1

    def state_dict(self) -> dict:
        return {"metric": self.metric, "score": self.score, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if state.get("metric") == self.metric:  # a run resumed with another metric starts its best afresh
            self.score, self.step = float(state["score"]), int(state["step"])


class Validator:
    """Holds the fixed subset, the feature extractor and the reference features of one training run."""

    def __init__(self, cfg: Config, accelerator, extractor: evaluation.Extractor | None = None):
        v = cfg.validation
        self.cfg, self.accelerator = cfg, accelerator
        self.directions = ("a2b", "b2a") if v.direction == "both" else (v.direction,)
        self.batch_size = v.batch_size
        self.images = {"a": load_subset(v.root_a, cfg, "validation.root_a"),
                       "b": load_subset(v.root_b, cfg, "validation.root_b")}
        if extractor is None:
            # Main process first: if the weights must be downloaded, one process does it.
            with accelerator.main_process_first():
                extractor = evaluation.load_extractor(v.inception_weights, str(accelerator.device))
        self.extractor = extractor
        self.best = Best(v.metric)
        self._reference: dict[str, np.ndarray] = {}

    def _shard(self, n: int) -> list[int]:
        return list(range(self.accelerator.process_index, n, self.accelerator.num_processes))

    def _gather(self, features: np.ndarray, indices: list[int], n: int) -> np.ndarray:
        """Every rank's (features, subset indices) -> (n, D) features in subset order, on every rank."""
        acc, dim = self.accelerator, self.extractor.feature_dim
        if acc.num_processes == 1:
            return features
        # Pad to an equal row count (gather needs equal shapes); index -1 marks padding.
        rows = -(-n // acc.num_processes)
        padded = torch.zeros(rows, dim, dtype=torch.float32, device=acc.device)
        index = torch.full((rows,), -1, dtype=torch.long, device=acc.device)
        padded[:len(indices)] = torch.from_numpy(features).to(acc.device)
        index[:len(indices)] = torch.tensor(indices, dtype=torch.long, device=acc.device)
        all_features, all_index = acc.gather(padded).cpu().numpy(), acc.gather(index).cpu().numpy()
        out = np.zeros((n, dim), np.float32)
        keep = all_index >= 0
        out[all_index[keep]] = all_features[keep]
        return out

    @torch.no_grad()
    def _features(self, images: torch.Tensor, generator: nn.Module | None) -> np.ndarray:
        """This rank's share of ``images`` (translated by ``generator`` when given), gathered from all ranks."""
        indices = self._shard(len(images))
        device = self.accelerator.device
        rows = []
        for start in range(0, len(indices), self.batch_size):
            batch = images[indices[start:start + self.batch_size]].to(device)
            if generator is not None:
                with self.accelerator.autocast():
                    batch = generator(batch)
            rows.append(self.extractor(to_uint8(batch)))
        features = np.concatenate(rows) if rows else np.zeros((0, self.extractor.feature_dim), np.float32)
        return self._gather(features, indices, len(images))

    def __call__(self, generators: nn.ModuleDict, step: int) -> dict[str, float] | None:
        """Score ``generators`` (all ranks call this); metrics on the main process, None on the others.

        Returns ``{"fid_a2b": ..., "kid_a2b": ..., "kid_std_a2b": ..., "score": ..., "improved": 0/1}``.
        """
        was_training = generators.training
        generators.eval()
        try:
            generated = {}
            for d in self.directions:
                source, reference, name = DIRECTIONS[d]
                if reference not in self._reference:
                    self._reference[reference] = self._features(self.images[reference], None)
                generated[d] = self._features(self.images[source], generators[name])
        finally:
            generators.train(was_training)
        if not self.accelerator.is_main_process:
            return None
        out: dict[str, float] = {}
        for d, features in generated.items():
            reference = self._reference[DIRECTIONS[d][1]]
            mu1, sigma1 = evaluation.statistics(features)
            mu2, sigma2 = evaluation.statistics(reference)
            out[f"fid_{d}"] = evaluation.frechet_distance(mu1, sigma1, mu2, sigma2)
            k = evaluation.kid(features, reference, subsets=100)
            out[f"kid_{d}"], out[f"kid_std_{d}"] = k["kid_mean"], k["kid_std"]
        metric = self.best.metric
        out["score"] = float(np.mean([out[f"{metric}_{d}"] for d in self.directions]))
        out["improved"] = float(out["score"] < self.best.score)
        if out["improved"]:
            self.best.score, self.best.step = out["score"], step
        return out
