"""All CycleGAN loss maths: adversarial, cycle, identity, VGG Gram style, R1. Each returns named terms.

Losses are computed in fp32 (logits and images are cast up) so that mixed precision changes only the
network arithmetic, not the objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclestyle.vgg import VGGFeatures


def gan_generator_loss(mode: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial term: make D call its output real."""
    fake_logits = fake_logits.float()
    if mode == "lsgan":  # Mao et al. 2017, the CycleGAN default
        return F.mse_loss(fake_logits, torch.ones_like(fake_logits))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if mode == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown gan_mode '{mode}'")


def gan_discriminator_loss(mode: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's term, halved as in the reference code so that D learns at half the rate of G."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    if mode == "lsgan":
        loss = F.mse_loss(real_logits, torch.ones_like(real_logits)) + F.mse_loss(fake_logits,
                                                                                  torch.zeros_like(fake_logits))
    elif mode == "vanilla":
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    elif mode == "hinge":
        loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    else:
        raise ValueError(f"unknown gan_mode '{mode}'")
    return 0.5 * loss


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(a.float(), b.float())


def r1_penalty(disc: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty on real inputs, 0.5 * E[|grad D(x)|^2] (Mescheder et al. 2018)."""
    real = real.detach().requires_grad_(True)
    logits = disc(real)
    (grad,) = torch.autograd.grad(logits.float().sum(), real, create_graph=True)
    return 0.5 * grad.float().square().sum(dim=(1, 2, 3)).mean()


class GramTarget(nn.Module):
    """Style target of one domain: the running mean of its real images' Gram matrices, one per VGG layer.

    The mean is exact over the first ``1 / (1 - momentum)`` updates and an exponential moving average
    after that, so early targets are not biased towards the first images and late ones follow the data.
    Buffers only: it is saved with the training state, the VGG is not.
    """

    def __init__(self, channels: list[int], momentum: float = 0.999):
        super().__init__()
        self.momentum = momentum
        self.n_layers = len(channels)
        for i, c in enumerate(channels):
            self.register_buffer(f"gram_{i}", torch.zeros(c, c))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def grams(self) -> list[torch.Tensor]:
        return [getattr(self, f"gram_{i}") for i in range(self.n_layers)]

    @torch.no_grad()
    def update(self, batch_grams: list[torch.Tensor]) -> None:
        """Fold in one batch: ``batch_grams`` are (N, C, C) or already batch-averaged (C, C)."""
        self.count += 1
        rate = max(1.0 / float(self.count), 1.0 - self.momentum)
        for target, g in zip(self.grams, batch_grams):
            target.lerp_(g.float().reshape(-1, *target.shape).mean(0), rate)

    def loss(self, grams: list[torch.Tensor]) -> torch.Tensor:
        """Sum over layers of the mean squared difference to the target: Gatys et al.'s unnormalised loss, as
        used by ``cyclestyle.stylize`` (its weight is tied to the feature scale; training uses :func:`style_loss`)."""
        return sum(F.mse_loss(g, t.expand_as(g)) for g, t in zip(grams, self.grams))


def style_loss(grams: list[torch.Tensor], targets: list[torch.Tensor], eps: float = 1e-30
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Scale-free Gram style loss: ``(total, per_layer)``.

    Per layer, ``||G - T||_F^2 / ||T||_F^2``: Gatys et al. 2016's squared Gram error, divided by the target's own
    energy instead of a size factor. It is averaged over the batch; the total is the mean over layers (Gatys et
    al.'s equal layer weights 1/L), so its size does not grow with the number of layers.
    Multiplying a layer's activations by any constant scales both Grams by its square and leaves the term
    unchanged, so a weight means the same for any feature network or set of layers, and no layer
    dominates because its activations happen to be larger. ``grams`` are (N, C, C); each target is (N, C, C)
    (one per image) or (C, C) (shared). ``eps`` only turns 0/0 (an all-zero Gram on both sides) into 0; it is far
    below the energy of any real Gram, so the loss stays scale-free.
    """
    per_layer = []
    for g, t in zip(grams, targets):
        g, t = g.float(), t.float().expand_as(g)
        error = (g - t).square().sum(dim=(-2, -1))
        energy = t.square().sum(dim=(-2, -1))
        per_layer.append((error / (energy + eps)).mean())
    return torch.stack(per_layer).mean(), per_layer

