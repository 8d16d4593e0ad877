"""The CycleGAN training loop: one readable function on accelerate, plus the image pool.

Single process, multi-GPU and multi-node all run this same code; ``accelerate launch`` decides which.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.optim.swa_utils import AveragedModel

from cyclestyle import checkpoint, config as config_lib, losses, nets, resume as resume_policy
from cyclestyle.config import Config, ConfigError
from cyclestyle.data import build_loader, build_transform, load_image
from cyclestyle.devices import resolve_precision
from cyclestyle.validation import Validator
from cyclestyle.vgg import VGGFeatures

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on SIGTERM/SIGINT after saving; rerun with --resume latest
# Consecutive steps with a non-finite loss tolerated under fp16 (its loss scaler skips such steps and
# recovers); in fp32/bf16 a NaN loss means NaN weights, so one is enough to stop.
FP16_NONFINITE_STEPS = 20


class ImagePool:
    """History of generated images for the discriminator (Shrivastava et al. 2017, used by CycleGAN).

    Each query returns, per image, with probability 1/2 a stored older image (which the new one replaces)
    and otherwise the new image. It draws from its own generator so that its state can be saved and a
    resumed run makes exactly the choices the uninterrupted run would have made.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()  # D's step must never reach back into G's graph
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.rng) < 0.5:
                i = int(torch.randint(self.size, (), generator=self.rng))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        images = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"images": images, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.images = [image.to(device) for image in state["images"]]
        self.rng.set_state(state["rng"])


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    num_processes: int
    generators: dict[str, nn.Module]  # gen_ab, gen_ba (the EMA weights when train.ema)
    discriminators: dict[str, nn.Module]
    losses: dict[str, float] = field(default_factory=dict)  # last logged values
    checkpoint: Path | None = None
    generators_file: Path | None = None  # generators/last.safetensors
    preempted: bool = False  # stopped early by SIGTERM/SIGINT, after a checkpoint


@contextlib.contextmanager
def graceful_stop() -> dict:
    """On the first SIGTERM/SIGINT, ask the loop to stop after this step; a second one exits at once.

    Cluster schedulers send SIGTERM, then SIGKILL after a grace period: one step plus a checkpoint
    must fit in it.
    """
    state = {"requested": False}

    def handler(signum, frame):
        if state["requested"]:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        state["requested"] = True
        print(f"\ncyclestyle: {signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
        yield state
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def lr_factor(step: int, total: int, decay: int) -> float:
    """Constant, then linear decay to 0 over the last ``decay`` steps (CycleGAN paper, section 4)."""
    if decay == 0 or step < total - decay:
        return 1.0
    return max(0.0, (total - step) / decay)


def ema_decay_at(decay: float, step: int) -> float:
    """Decay of the generators' EMA update after optimizer step ``step`` (1-based): ``decay``, warmed up.

    ``min(decay, (1 + step) / (10 + step))``, the warm-up of TensorFlow's ExponentialMovingAverage
    ``num_updates``: early on the average spans about step / 9 steps instead of 1 / (1 - decay). A fixed
    0.999 keeps 0.999^1000 = 37% of the random initial weights after 1000 steps, which the ground-truth
    benchmark scores below the identity baseline (README, "Earlier tables": the EMA rows).
    """
    return min(decay, (1.0 + step) / (10.0 + step))


class WarmupEMA:
    """``multi_avg_fn`` for ``AveragedModel``: an EMA whose decay follows :func:`ema_decay_at`. The caller
    sets ``step`` before each update (a Python int: no device sync), so a resumed run averages exactly as
    an uninterrupted one."""

    def __init__(self, decay: float):
        self.decay = decay
        self.step = 0

    @torch.no_grad()
    def __call__(self, ema_params: list[torch.Tensor], params: list[torch.Tensor], _num_averaged) -> None:
        # AveragedModel calls this once per (device, dtype) group; integer buffers (a style-coded generator's
        # code count) are counters, not weights: they are copied
        if not ema_params[0].is_floating_point():
            torch._foreach_copy_(ema_params, params)
            return
        torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay_at(self.decay, self.step))


def train(cfg: Config, resume: str | None = None, stop_at_step: int | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or resume) a CycleGAN as described by ``cfg``; returns the final state.

    ``resume``: None, ``"latest"`` (the run's newest checkpoint, or a fresh start if it has none), or a
    checkpoint folder. ``stop_at_step``: stop early at that step with a checkpoint (time-sliced jobs).
    SIGTERM/SIGINT stop it after the current step with a checkpoint (``TrainResult.preempted``).
    ``on_step(step)`` is called after every optimizer step (benchmarks time it).
    """
    with graceful_stop() as stop:
        return _train(cfg, resume, stop_at_step, stop, on_step)


def make_adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has one for the device, else the foreach one: the same
    update rule, differing only in float rounding, and about 3x faster on CPU (README "Speed", Fused Adam).
    """
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def generator_backward(accelerator: Accelerator, gen_ab: nn.Module, gen_ba: nn.Module, disc_a: nn.Module,
                       disc_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor,
                       objective: losses.CycleGANObjective,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Back-propagate the generators' loss (adversarial + cycle + identity + style) into their grads.

    Two passes, one per direction: G_ab runs once on [real_a, real_b] (fake_b and B's identity in one
    batch; instance norm is per image, so batching is exact), then G_ba reconstructs A from fake_b, and
    that graph is back-propagated before the mirror pass for B->A->B builds its own. The gradients are
    those of one backward of the summed loss (tested), with four generator calls instead of six and only
    half the activations alive at once (README "Speed" has the memory and time measured against both).

    Under DDP the first pass skips the all-reduce; the second uses both generators and all-reduces
    the summed gradients. ``disc_a``/``disc_b`` must be frozen and unwrapped (no DDP): they are only a
    function of the fakes here. Returns the total loss (detached), its terms, and fake_a, fake_b for
    the discriminator step.
    """
    terms: dict[str, torch.Tensor] = {}
    fakes: dict[str, torch.Tensor] = {}  # "ab": fake_b, "ba": fake_a
    loss_g = torch.zeros((), device=real_a.device)
    n = real_a.shape[0]
    for direction, forward, back, disc, real, target_real in (("ab", gen_ab, gen_ba, disc_b, real_a, real_b),
                                                              ("ba", gen_ba, gen_ab, disc_a, real_b, real_a)):
        with contextlib.ExitStack() as sync:
            if direction == "ab":
                sync.enter_context(accelerator.no_sync(gen_ab))
                sync.enter_context(accelerator.no_sync(gen_ba))
            with accelerator.autocast():
                inputs = torch.cat([real, target_real]) if objective.uses_identity else real
                if objective.coded:  # in the style of the step's target-domain images; back with real's own code
                    view = nets.random_hue_rotate if objective.code_hue_jitter else (lambda x: x)
                    style, own = forward(view(target_real), encode_only=True), back(view(real), encode_only=True)
                    random = nets.random_codes(n, style.shape[1], style.device)
                    styles = [style] + ([style] if objective.uses_identity else []) + [random]
                    out = forward(torch.cat([inputs, real]), style=torch.cat(styles))
                else:
                    out = forward(inputs)
                fakes[direction] = fake = out[:n]
                fake_logits = disc(fake)  # before the way back: the order autograd sums fake's gradients in
                rec = back(fake, style=own) if objective.coded else back(fake)
                codes = None
                if objective.coded:  # the codes read back: of the translation (encoder fixed) and of a random code
                    read = torch.cat([forward(fake, encode_only=True, frozen_encoder=True),
                                      forward(out[-n:], encode_only=True)])
                    codes = (read, torch.cat([style, random]))
                loss, part = objective.generator_terms(
                    direction, real, fake_logits=fake_logits, rec=rec, fake=fake,
                    identity=out[n:2 * n] if objective.uses_identity else None, target_real=target_real, codes=codes)
            accelerator.backward(loss)
        terms.update(part)
        loss_g = loss_g + loss.detach()
    return loss_g, terms, fakes["ba"], fakes["ab"]


class RunState:
    """What a checkpoint holds beyond accelerate's own state (networks, optimizers, schedulers, RNGs), packed
    for a save and unpacked on resume in this one place: the EMA generators, the style targets and the best
    validation score (identical on every process, saved once) and each process's image pools."""

    def __init__(self, pools: dict[str, ImagePool], objective: losses.CycleGANObjective,
                 ema: AveragedModel | None, validator: Validator | None):
        self.pools, self.objective, self.ema, self.validator = pools, objective, ema, validator

    def shared(self) -> dict:
        state = {f"style_target_{d}": target.state_dict() for d, target in self.objective.targets.items()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.validator is not None:
            state["validation_best"] = self.validator.best.state_dict()
        return state

    def per_rank(self) -> dict:
        return {f"pool_{name}": pool.state_dict() for name, pool in self.pools.items()}

    def restore(self, shared: dict, rank_state: dict | None, device: torch.device, folder: Path,
                keep_validation_best: bool, is_main: bool) -> None:
        if self.ema is not None:
            self.ema.load_state_dict(shared["ema"])
        for direction, target in self.objective.targets.items():
            if f"style_target_{direction}" not in shared:  # a checkpoint older than the config it holds
                raise ConfigError(f"cannot resume {folder}: it holds no {direction} style target (it was saved "
                                  "with another loss.style_target, or with the style loss off); use its settings "
                                  f"({folder.parent.parent / 'config.yaml'}) or another train.run_dir")
            target.load_state_dict(shared[f"style_target_{direction}"])
        if self.validator is not None and "validation_best" in shared:
            if keep_validation_best:
                self.validator.best.load_state_dict(shared["validation_best"])
            elif is_main:
                print("cyclestyle: the validation subset or metric changed: the best score starts afresh")
        if rank_state is not None:
            for name, pool in self.pools.items():
                pool.load_state_dict(rank_state[f"pool_{name}"], device)
        elif is_main:
            print(f"warning: {folder} was written by fewer processes; image pools of new ranks start empty")


def make_accelerator(t) -> tuple[Accelerator, str]:
    """The Accelerator of a run and its resolved precision; seeds every process alike (identical weights)."""
    if t.compile:
        # Where inductor cannot build (no C compiler, unsupported op), run that code eagerly instead of failing.
        torch._dynamo.config.suppress_errors = True
    precision = resolve_precision(t.mixed_precision, t.cpu)
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=t.grad_accum,
                              cpu=t.cpu, step_scheduler_with_optimizer=False,
                              dynamo_backend="inductor" if t.compile else "no")
    if accelerator.device.type == "cuda" and not t.deterministic:
        # Every step sees the same crop size, so cuDNN's one-time autotuning per conv shape pays back; the
        # kernels it picks may differ between runs, so a resumed GPU run is exact only with train.deterministic.
        torch.backends.cudnn.benchmark = True
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    set_seed(t.seed, deterministic=t.deterministic)
    return accelerator, precision


def prepare_run_folder(accelerator: Accelerator, cfg: Config, resume: str | None) -> tuple[Path | None, list[str]]:
    """Resolve ``resume``, apply the resume policy (refused changes raise here, before anything expensive),
    then write the config in force and log the changes. Returns (checkpoint to resume from, changes)."""
    run_dir = Path(cfg.train.run_dir)
    resume_from = checkpoint.resolve_resume(run_dir, resume)
    resume_step, changes = resume_policy.check(run_dir, cfg, resume_from)
    accelerator.wait_for_everyone()  # every rank has read the saved config before rank 0 rewrites it
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, run_dir / "config.yaml")  # the config in force now; the changes go to a log
        resume_policy.record(run_dir, resume_step, changes)
        if changes:
            print(f"cyclestyle: resuming at step {resume_step} with a changed config (logged in "
                  f"{run_dir / resume_policy.CHANGES_LOG}):\n  " + "\n  ".join(changes), flush=True)
    return resume_from, changes


def build_objective(cfg: Config, accelerator: Accelerator) -> losses.CycleGANObjective:
    """The objective, with the VGG features when a style loss is on (missing weights fail here, before training
    starts) and the reference painting's Gram as the A->B target when ``loss.style_reference`` is set."""
    use_style = cfg.loss.style_ab > 0 or cfg.loss.style_ba > 0
    vgg = VGGFeatures(cfg.loss.vgg_weights) if use_style else None
    objective = losses.CycleGANObjective(cfg.loss, vgg, reduce_mean=lambda xs: accelerator.reduce(xs, "mean"),
                                         coded=cfg.model.style_code != "none")
    objective.to(accelerator.device)
    if objective.fixed_reference:
        crop = build_transform(cfg.data.crop_size, cfg.data.crop_size, "shorter_side", flip=False, train=False)
        painting = crop(image=np.asarray(load_image(cfg.loss.style_reference)))["image"]
        objective.set_reference(painting.to(accelerator.device))
    return objective


def apply_optimizer_settings(t, step: int, *pairs) -> None:
    """Set lr, betas and the schedule's base from the config in every (optimizer, scheduler) pair: a resumed
    run's saved optimizers hold the old values (the resume policy lets these keys change)."""
    for opt, sched in pairs:
        sched.scheduler.base_lrs = [t.lr] * len(opt.param_groups)
        for group in opt.param_groups:
            group.update(lr=t.lr * lr_factor(step, t.steps, t.decay_steps), initial_lr=t.lr, betas=(t.beta1, t.beta2))


def _train(cfg: Config, resume: str | None, stop_at_step: int | None, stop: dict,
           on_step: Callable[[int], None] | None) -> TrainResult:
    t, run_dir = cfg.train, Path(cfg.train.run_dir)
    accelerator, precision = make_accelerator(t)
    device, is_main = accelerator.device, accelerator.is_main_process

    # --- Run folder: refuse collisions and frozen-key changes before anything expensive happens ---
    resume_from, changes = prepare_run_folder(accelerator, cfg, resume)
    # --- Objective and validation: missing VGG / Inception weights fail here, before the first step ---
    objective = build_objective(cfg, accelerator)
    validator = Validator(cfg, accelerator) if cfg.validation.every else None

    # --- Data ---
    loader = build_loader(cfg.data, t.seed, t.batch_size, accelerator.process_index, accelerator.num_processes,
                          pin_memory=device.type == "cuda")

    # --- Networks, optimizers, schedules ---
    gen_ab, gen_ba = (nets.build_generator(cfg.model, cfg.loss.vgg_weights) for _ in range(2))
    disc_a, disc_b = nets.build_discriminator(cfg.model), nets.build_discriminator(cfg.model)
    opt_g = make_adam(list(itertools.chain(gen_ab.parameters(), gen_ba.parameters())), t.lr, (t.beta1, t.beta2))
    opt_d = make_adam(list(itertools.chain(disc_a.parameters(), disc_b.parameters())), t.lr, (t.beta1, t.beta2))
    schedule = lambda step: lr_factor(step, t.steps, t.decay_steps)  # noqa: E731
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, schedule)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, schedule)
    gen_ab, gen_ba, disc_a, disc_b, opt_g, opt_d, sched_g, sched_d = accelerator.prepare(
        gen_ab, gen_ba, disc_a, disc_b, opt_g, opt_d, sched_g, sched_d)
    generators = nn.ModuleDict({"gen_ab": accelerator.unwrap_model(gen_ab, keep_torch_compile=False),
                                "gen_ba": accelerator.unwrap_model(gen_ba, keep_torch_compile=False)})
    # In the generator step D is frozen and only a function of fake images: calling the bare module
    # keeps DDP from expecting gradients for D's parameters in that backward pass.
    plain_disc_a = accelerator.unwrap_model(disc_a, keep_torch_compile=False)
    plain_disc_b = accelerator.unwrap_model(disc_b, keep_torch_compile=False)
    ema_fn = WarmupEMA(t.ema_decay)
    ema = AveragedModel(generators, multi_avg_fn=ema_fn, use_buffers=True) if t.ema else None
    sample_generators = ema.module if ema is not None else generators  # what images, generator files and validation use
    rank_seed = t.seed * 1000 + accelerator.process_index  # pools differ per rank, like their data
    pools = {"a": ImagePool(t.pool_size, rank_seed), "b": ImagePool(t.pool_size, rank_seed + 500)}
    state = RunState(pools, objective, ema, validator)

    # --- Resume ---
    step = 0
    if resume_from is not None:
        trainer_state, shared, rank_state = checkpoint.load_checkpoint(accelerator, resume_from)
        step = trainer_state["step"]
        state.restore(shared, rank_state, device, resume_from, not resume_policy.resets_validation_best(changes),
                      is_main)
        apply_optimizer_settings(t, step, (opt_g, sched_g), (opt_d, sched_d))
    end = min(t.steps, stop_at_step) if stop_at_step else t.steps
    writer = _open_writer(run_dir, step) if is_main else None
    if is_main:
        _print_plan(cfg, loader, generators, accelerator, precision, step, end, resume_from)

    # --- Training loop ---
    from tqdm.auto import tqdm

    loader.sampler.start_batch = step * t.grad_accum  # the stream is position-addressed: exact resume
    batches = iter(loader)
    progress = tqdm(total=end, initial=step, disable=not is_main, dynamic_ncols=True, unit="it")
    logged: dict[str, float] = {}
    folder = generators_file = None
    preempted = False
    nonfinite = torch.zeros((), device=device)  # consecutive steps with a non-finite loss, kept on device
    while step < end:
        batch = next(batches)
        real_a = batch["a"].to(device, non_blocking=True)
        real_b = batch["b"].to(device, non_blocking=True)
        with accelerator.accumulate(gen_ab, gen_ba, disc_a, disc_b):
            with accelerator.autocast():
                objective.update_style_targets({"ab": real_b, "ba": real_a}, generators)
            # Generator step: D frozen (under accumulate, its no-op zero_grad would let G's grads leak into D).
            plain_disc_a.requires_grad_(False)
            plain_disc_b.requires_grad_(False)
            loss_g, terms, fake_a, fake_b = generator_backward(
                accelerator, gen_ab, gen_ba, plain_disc_a, plain_disc_b, real_a, real_b, objective)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

            # Discriminator step on detached fakes from the history pool.
            plain_disc_a.requires_grad_(True)
            plain_disc_b.requires_grad_(True)
            with accelerator.autocast():
                loss_da, terms_a = objective.discriminator_terms("a", disc_a, real_a, pools["a"].query(fake_a))
                loss_db, terms_b = objective.discriminator_terms("b", disc_b, real_b, pools["b"].query(fake_b))
                loss_d = loss_da + loss_db
            terms.update(terms_a)
            terms.update(terms_b)
            accelerator.backward(loss_d)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        if not accelerator.sync_gradients:
            continue
        step += 1
        sched_g.step()
        sched_d.step()
        if ema is not None:
            ema_fn.step = step
            ema.update_parameters(generators)
        progress.update(1)
        if on_step is not None:
            on_step(step)
        finite = torch.isfinite(loss_g.detach()) & torch.isfinite(loss_d.detach())
        nonfinite = torch.where(finite, torch.zeros_like(nonfinite), nonfinite + 1)

        # --- Maintenance gate: finite check, scalars, images, validation, checkpoint, stop vote ---
        due = _due(step, end, t, cfg.validation.every)
        if due["log"] or due["checkpoint"]:
            # The only host syncs: a NaN is caught at most log_every steps late, never written over a good checkpoint.
            if check_finite(accelerator, nonfinite, precision, step, run_dir):
                due["checkpoint"] = False  # fp16 is skipping steps right now: save at the next good one
        if due["log"]:
            logged = _log_scalars(writer, progress, {**terms, "gen_total": loss_g, "disc_total": loss_d}, step,
                                  opt_g, opt_d)
        if due["images"] and writer is not None:
            _log_images(writer, sample_generators, real_a, real_b, step, accelerator)
        if due["validate"] and validator is not None:
            _validate(validator, sample_generators, step, writer, progress, cfg, ema is not None)
        if due["checkpoint"]:
            folder, generators_file = _save(accelerator, cfg, step, state, sample_generators, ema is not None)
        if _stop_requested(accelerator, stop) and step < end:
            if not due["checkpoint"]:
                folder, generators_file = _save(accelerator, cfg, step, state, sample_generators, ema is not None)
            preempted = True
            if is_main:
                print(f"\ncyclestyle: stopped at step {step} with a checkpoint; continue with --resume latest",
                      file=sys.stderr, flush=True)
            break

    progress.close()
    if writer is not None:
        writer.close()
    if folder is None:  # nothing left to train: the run was already complete
        found = checkpoint.list_checkpoints(run_dir)
        folder = found[-1][1] if found else None
        generators_file = run_dir / "generators" / "last.safetensors"
        if is_main:
            print(f"cyclestyle: {run_dir} is already at step {step} of {t.steps}; nothing to train")
    accelerator.wait_for_everyone()
    return TrainResult(step=step, run_dir=run_dir, num_processes=accelerator.num_processes,
                       generators=dict(sample_generators.items()),
                       discriminators={"disc_a": plain_disc_a, "disc_b": plain_disc_b},
                       losses=logged, checkpoint=folder, generators_file=generators_file, preempted=preempted)


def _due(step: int, end: int, t, validate_every: int) -> dict[str, bool]:
    """What the maintenance gate does after optimizer step ``step`` (``end``: where this process stops)."""
    return {"log": step % t.log_every == 0 or step == end,
            "images": step % t.image_every == 0 or step == end,
            "validate": bool(validate_every) and (step % validate_every == 0 or step == t.steps),
            "checkpoint": step % t.checkpoint_every == 0 or step == end}


def _stop_requested(accelerator: Accelerator, stop: dict) -> bool:
    """SIGTERM/SIGINT on any process: all must agree to stop, or the ones that go on would wait forever in
    their next collective."""
    requested = stop["requested"]
    if accelerator.num_processes > 1:
        requested = bool(accelerator.reduce(torch.tensor(float(requested), device=accelerator.device), "sum") > 0)
    return requested


def _save(accelerator: Accelerator, cfg: Config, step: int, state: RunState, generators: nn.ModuleDict,
          ema: bool) -> tuple[Path, Path | None]:
    """A full checkpoint (all processes) and, on the main process, ``generators/last.safetensors``."""
    run_dir = Path(cfg.train.run_dir)
    trainer_state = {"num_processes": accelerator.num_processes, "config": config_lib.to_dict(cfg)}
    folder = checkpoint.save_checkpoint(accelerator, run_dir, step, state.shared(), state.per_rank(), trainer_state,
                                        cfg.train.keep_checkpoints)
    generators_file = None
    if accelerator.is_main_process:
        generators_file = checkpoint.save_generators(run_dir / "generators" / "last.safetensors",
                                                     dict(generators.items()), config_lib.to_dict(cfg)["model"], step,
                                                     ema=ema, extra={"crop_size": cfg.data.crop_size})
    return folder, generators_file


def _open_writer(run_dir: Path, step: int):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"), purge_step=step + 1 if step else None)


def _print_plan(cfg: Config, loader, generators: nn.ModuleDict, accelerator: Accelerator, precision: str,
                step: int, end: int, resume_from: Path | None) -> None:
    t = cfg.train
    n_params = sum(p.numel() for p in generators.parameters() if p.requires_grad) / 1e6  # not a vgg code's VGG
    print(f"cyclestyle: run folder {Path(t.run_dir).resolve()}\n"
          f"  data: {len(loader.dataset.files_a)} images in A ({cfg.data.root_a}), "
          f"{len(loader.dataset.files_b)} in B ({cfg.data.root_b}), {cfg.data.crop_size} px crops\n"
          f"  model: 2x {cfg.model.generator} ({n_params / 2:.2f} M params each), 2x {cfg.model.discriminator} D\n"
          f"  device: {accelerator.device} x {accelerator.num_processes} process(es), mixed precision {precision}, "
          f"batch {t.batch_size} x {t.grad_accum} accum x {accelerator.num_processes}\n"
          f"  steps: {step} -> {end} of {t.steps}" + (f" (resumed from {resume_from})" if resume_from else "")
          + f"\n  tensorboard --logdir {Path(t.run_dir) / 'tb'}", flush=True)


def _log_scalars(writer, progress, terms: dict[str, torch.Tensor], step: int, opt_g, opt_d) -> dict[str, float]:
    logged = {k: float(v.detach()) for k, v in terms.items()}
    if writer is not None:
        for name, value in logged.items():
            writer.add_scalar(f"loss/{name}", value, step)
        writer.add_scalar("lr/gen", opt_g.param_groups[0]["lr"], step)
        writer.add_scalar("lr/disc", opt_d.param_groups[0]["lr"], step)
        writer.add_scalar("speed/it_per_s", progress.format_dict.get("rate") or 0.0, step)
    progress.set_postfix({k: f"{logged[k]:.3f}" for k in ("gan_ab", "cycle_a", "disc_b") if k in logged})
    return logged


def _validate(validator: Validator, generators: nn.ModuleDict, step: int, writer, progress, cfg: Config,
              ema: bool) -> None:
    """FID/KID of the validation subset (every process: the features are gathered); on the main process, log
    the scores and write ``generators/best.safetensors`` when they improved."""
    scores = validator(generators, step)
    if scores is None:
        return
    _record_validation(scores, step, writer, progress)
    if scores["improved"]:
        checkpoint.save_generators(
            Path(cfg.train.run_dir) / "generators" / "best.safetensors", dict(generators.items()),
            config_lib.to_dict(cfg)["model"], step, ema=ema,
            extra={"crop_size": cfg.data.crop_size, "validation": {"metric": cfg.validation.metric,
                                  **{k: v for k, v in scores.items() if k != "improved"}}})


def check_finite(accelerator: Accelerator, nonfinite: torch.Tensor, precision: str, step: int, run_dir: Path) -> int:
    """Consecutive steps with a non-finite loss, agreed by all processes (the most of any); raises
    FloatingPointError, with the same message on every process, when that is too many.

    Agreed through a collective: a rank that stopped alone would leave the others waiting forever in their
    next collective, and ranks that disagreed on skipping a checkpoint would hang inside the save.
    """
    per_rank = accelerator.gather(nonfinite.reshape(1)).cpu().tolist() if accelerator.num_processes > 1 \
        else [float(nonfinite)]
    bad_steps = int(max(per_rank))
    if bad_steps >= (FP16_NONFINITE_STEPS if precision == "fp16" else 1):
        where = "" if len(per_rank) == 1 else " on process " + ", ".join(
            str(rank) for rank, n in enumerate(per_rank) if n == bad_steps)
        last = checkpoint.list_checkpoints(run_dir)
        raise FloatingPointError(
            f"non-finite loss{where} for {bad_steps} step(s) up to step {step}; stopped without saving. Last good "
            f"checkpoint: {last[-1][1] if last else 'none'}. Try a lower train.lr or train.mixed_precision=no, "
            "then --resume latest")
    return bad_steps


def _record_validation(scores: dict[str, float], step: int, writer, progress) -> None:
    figures = {k: v for k, v in scores.items() if k not in ("score", "improved")}
    for name, value in figures.items():
        writer.add_scalar(f"val/{name}", value, step)
    text = ", ".join(f"{k} {v:.4g}" for k, v in figures.items() if not k.startswith("kid_std"))
    progress.write(f"validation at step {step}: {text}" + (" (best so far)" if scores["improved"] else ""))


@torch.no_grad()
def _log_images(writer, gens: nn.ModuleDict, real_a: torch.Tensor, real_b: torch.Tensor, step: int,
                accelerator: Accelerator) -> None:
    """Rows real_a | fake_b | rec_a and real_b | fake_a | rec_b for the first image of the batch."""
    from torchvision.utils import make_grid

    was_training = gens.training
    gens.eval()
    with accelerator.autocast():
        a, b = real_a[:1], real_b[:1]
        fake_b, fake_a = gens["gen_ab"](a), gens["gen_ba"](b)
        rows = {"a2b": [a, fake_b, gens["gen_ba"](fake_b)], "b2a": [b, fake_a, gens["gen_ab"](fake_a)]}
    for name, images in rows.items():
        grid = make_grid(torch.cat([x.float() for x in images]), nrow=3, normalize=True, value_range=(-1, 1))
        writer.add_image(f"images/{name}", grid.cpu(), step)
    gens.train(was_training)
