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


class CycleGANObjective(nn.Module):
    """The whole training objective in one place: the loss weights, the style features and the style targets.

    ``generator_terms`` and ``discriminator_terms`` return ``(weighted total, named unweighted terms)``; the
    training loop runs the networks, the backward passes, ``no_sync`` and autocast. The style targets are
    state (saved in checkpoints) and change only through :meth:`update_style_targets`, an explicit call per
    micro-batch. ``reduce_mean`` averages a list of tensors over processes (identity on one process), so that
    every rank folds the same values into its targets.
    """

    def __init__(self, cfg, vgg: VGGFeatures | None = None, reduce_mean=None, coded: bool = False):
        super().__init__()
        self.mode = cfg.gan_mode
        # Style-coded generators (model.style_code): each translation has its own target style, the target-domain
        # image whose code it was given, so the style loss is always per image and the code term applies.
        self.coded = coded
        self.lambda_code = cfg.lambda_code
        self.code_hue_jitter = coded and cfg.code_hue_jitter  # read by generator_backward
        # cycle weight per direction ("ab": A->B->A); the identity of a direction's generator is a fraction of the
        # cycle weight of the domain it translates into (the reference's lambda_idt * lambda_B for G_A)
        cycle = {"a": cfg.lambda_cycle if cfg.lambda_cycle_a is None else cfg.lambda_cycle_a,
                 "b": cfg.lambda_cycle if cfg.lambda_cycle_b is None else cfg.lambda_cycle_b}
        self.lambda_cycle = {"ab": cycle["a"], "ba": cycle["b"]}
        self.lambda_identity = {"ab": cfg.lambda_identity * cycle["b"], "ba": cfg.lambda_identity * cycle["a"]}
        self.identity_fraction = cfg.lambda_identity
        self.r1_gamma = cfg.r1_gamma
        self.style_weight = {"ab": cfg.style_ab, "ba": cfg.style_ba}
        if any(self.style_weight.values()) and vgg is None:
            raise ValueError("a style loss needs the VGG features")
        self.vgg = vgg
        self.reduce_mean = reduce_mean or (lambda tensors: tensors)
        # mean: the running mean Gram of the target domain's real images; batch: fake i against real i, no state.
        # loss.style_reference fixes the A->B target to one painting's Gram (set_reference).
        self.fixed_reference = cfg.style_reference is not None and cfg.style_ab > 0
        self.targets = nn.ModuleDict({
            d: GramTarget(vgg.channels) for d, w in self.style_weight.items()
            if w > 0 and not coded and (cfg.style_target == "mean" or (d == "ab" and self.fixed_reference))})

    @property
    def uses_identity(self) -> bool:
        return self.identity_fraction > 0

    @torch.no_grad()
    def set_reference(self, painting: torch.Tensor) -> None:
        """The A->B style target: one painting's Gram, (3, H, W) in [-1, 1]."""
        self.targets["ab"].update(self.vgg.grams(painting[None]))

    @torch.no_grad()
    def update_style_targets(self, real: dict[str, torch.Tensor], generators: dict[str, nn.Module] | None = None
                             ) -> None:
        """Fold this micro-batch's real target-domain images (``real["ab"]``: B images) into the mean targets, and
        with style-coded ``generators`` (bare modules, not DDP-wrapped) their codes into each one's mean code."""
        if self.coded and generators is not None:
            for direction, name in (("ab", "gen_ab"), ("ba", "gen_ba")):
                codes = generators[name].encoder(real[direction]).float().mean(0)
                generators[name].track_mean(self.reduce_mean([codes])[0])
        for direction, target in self.targets.items():
            if direction == "ab" and self.fixed_reference:
                continue
            batch_mean = [g.mean(0) for g in self.vgg.grams(real[direction])]
            target.update(self.reduce_mean(batch_mean))

    def generator_terms(self, direction: str, real: torch.Tensor, fake_logits: torch.Tensor, rec: torch.Tensor,
                        fake: torch.Tensor, identity: torch.Tensor | None, target_real: torch.Tensor,
                        codes: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One direction's generator loss (``direction`` "ab": real A -> fake B -> rec A): adversarial on D's
        ``fake_logits``, cycle ``rec`` vs ``real``, identity (the generator's output for ``target_real``),
        style of ``fake`` against the direction's target (or ``target_real`` with style_target=batch), and for
        style-coded generators ``codes`` = (code of ``fake``, the code it was made with): L1, the latter fixed."""
        part, other = ("a", "b") if direction == "ab" else ("b", "a")
        terms = {f"gan_{direction}": gan_generator_loss(self.mode, fake_logits), f"cycle_{part}": l1(rec, real)}
        loss = terms[f"gan_{direction}"] + self.lambda_cycle[direction] * terms[f"cycle_{part}"]
        if identity is not None:
            terms[f"idt_{other}"] = l1(identity, target_real)
            loss = loss + self.lambda_identity[direction] * terms[f"idt_{other}"]
        if codes is not None:
            terms[f"code_{direction}"] = l1(codes[0], codes[1].detach())
            loss = loss + self.lambda_code * terms[f"code_{direction}"]
        if self.style_weight[direction] > 0:
            style, style_terms = self.style_terms(direction, fake, target_real)
            terms.update(style_terms)
            loss = loss + style
        return loss, terms

    def style_terms(self, direction: str, fake: torch.Tensor, target_real: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted scale-free Gram style loss of ``fake`` against the direction's target (with
        style_target=batch: ``target_real``, the target domain's images of the step); the unweighted total
        and the per-layer values as terms."""
        if direction in self.targets:
            target_grams = self.targets[direction].grams
        else:
            # style_target=batch: fake i against real i. The unpaired stream draws them independently, so
            # pairing by position is already a random pairing (a roll would add nothing), and a batch of N
            # stays equal to N accumulated micro-batches of 1. Per rank: nothing to reduce.
            with torch.no_grad():
                target_grams = self.vgg.grams(target_real)
        total, per_layer = style_loss(self.vgg.grams(fake), target_grams)
        terms = {f"style_{direction}": total}
        terms.update({f"style_{direction}/{name}": v.detach() for name, v in zip(self.vgg.layers, per_layer)})
        return self.style_weight[direction] * total, terms

    def discriminator_terms(self, domain: str, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss for one domain on real images and (pooled, detached) fakes, one batched forward (instance
        norm is per image, so this equals two calls and runs one DDP forward), plus R1 on the reals."""
        n = real.shape[0]
        logits = disc(torch.cat([real, fake.to(real.dtype)]))
        terms = {f"disc_{domain}": gan_discriminator_loss(self.mode, logits[:n], logits[n:])}
        loss = terms[f"disc_{domain}"]
        if self.r1_gamma > 0:
            terms[f"r1_{domain}"] = r1_penalty(disc, real)
            loss = loss + self.r1_gamma * terms[f"r1_{domain}"]
        return loss, terms
