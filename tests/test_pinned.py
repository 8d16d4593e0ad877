"""The training maths pinned: the weights after a few steps of a fixed seed, recorded in tests/data.

Guards refactors of the training code (the objective, the run state, the loop): what it computes must not
change unless a commit means it to. When it does mean to, record again and say why in the commit:

    python -m tests.test_pinned --record

Float rounding differs between CPUs (AVX2 / AVX-512 / AMX kernels), and Adam's first steps are about
lr * sign(grad), so a weight whose gradient is ~0 may move the other way: the comparison allows 1e-6
absolute per element and 0.5% of the elements beyond it. A change of the maths moves most weights by ~lr.
The biases of layers followed by an instance norm are left out: the norm subtracts them again, so their
gradient is exactly 0 in exact arithmetic and pure rounding noise in practice; Adam turns that noise into
steps of ~lr with a CPU-dependent sign (on an AMX Xeon all 575 elements beyond 1e-6 were these).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cyclestyle.config import load_config
from tests.conftest import one_thread, tiny_overrides, write_images

PINNED = Path(__file__).parent / "data" / "pinned_weights.safetensors"
# Every part of the objective and the state: identity, style (mean target, both directions), R1, the
# image pool, the EMA, spectral norm.
EXTRA = ("model.ngf=4", "model.ndf=4", "train.steps=3", "train.decay_steps=2", "train.pool_size=2",
         "loss.style_ab=1", "loss.style_ba=0.5", "loss.vgg_weights=random", "loss.r1_gamma=1", "train.ema=true",
         "model.spectral_norm=true")


def trained_weights(root: Path) -> tuple[dict[str, torch.Tensor], set[str]]:
    from cyclestyle.training import train

    data = write_images(root / "A", 4, seed=1), write_images(root / "B", 4, seed=2)
    with one_thread():
        result = train(load_config(None, tiny_overrides(data, root / "run", *EXTRA)))
    nets = {**result.generators, **result.discriminators}
    return {f"{name}.{key}": value.detach().clone().contiguous() for name, net in nets.items()
            for key, value in net.state_dict().items() if value.is_floating_point()}, biases_before_norms(nets)


def biases_before_norms(nets: dict) -> set[str]:
    """``name.key`` of every bias that an instance norm cancels (the layer right after it in a Sequential)."""
    keys = set()
    for name, net in nets.items():
        for prefix, module in net.named_modules():
            if isinstance(module, torch.nn.Sequential):
                for i, (layer, after) in enumerate(zip(module, module[1:])):
                    if isinstance(after, torch.nn.InstanceNorm2d) and getattr(layer, "bias", None) is not None:
                        keys.add(f"{name}.{prefix}.{i}.bias".replace("..", "."))
    return keys


def test_training_maths_unchanged(tmp_path):
    pinned = load_file(str(PINNED))
    weights, noise = trained_weights(tmp_path)
    assert weights.keys() == pinned.keys()
    assert len(noise) > 20 and noise <= weights.keys()
    far = total = 0
    for key, value in weights.items():
        if key in noise:
            continue
        far += int(((value - pinned[key]).abs() > 1e-6).sum())
        total += value.numel()
    assert far <= 0.005 * total, f"{far} of {total} weights differ by more than 1e-6 from {PINNED.name}"


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_file(trained_weights(Path(tmp))[0], str(PINNED))
    print(f"recorded {PINNED}")
