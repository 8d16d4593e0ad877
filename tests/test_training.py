import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cyclestyle import checkpoint, nets
from cyclestyle.config import LossConfig, ModelConfig
from cyclestyle.training import ImagePool, lr_factor, train
from tests.conftest import cpu_flags_say_native_bf16, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def params(modules):
    return {f"{name}.{k}": v.detach().clone() for name, m in modules.items() for k, v in m.state_dict().items()}


def test_auto_precision_is_bf16_where_the_hardware_has_it():
    from cyclestyle.devices import resolve_precision

    assert resolve_precision("auto", cpu=True) == ("bf16" if cpu_flags_say_native_bf16() else "no")
    assert resolve_precision("fp16") == "fp16" and resolve_precision("no") == "no"


def test_cpu_description_names_the_model_and_the_speed_flags(tmp_path):
    """Benchmarks print the CPU's model and the flags that decide each precision's speed, from /proc/cpuinfo."""
    from cyclestyle.devices import cpu_description

    xeon = tmp_path / "xeon"
    xeon.write_text("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
                    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
                    "processor\t: 1\ncpu family\t: 7\nmodel\t\t: 1\n"
                    "model name\t: ignored, the first core describes them all\n")
    d = cpu_description(str(xeon))
    assert d["model"] == "Intel(R) Xeon(R) Platinum 8488C (family 6 model 143)"
    assert d["flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    epyc = tmp_path / "epyc"
    epyc.write_text("model name\t: AMD EPYC 7B13\nflags\t\t: fpu fma avx avx2\n")
    assert cpu_description(str(epyc))["flags"] == ["avx2"]
    assert cpu_description(str(epyc))["model"] == "AMD EPYC 7B13"  # no family lines: the name alone
    assert cpu_description(str(tmp_path / "missing"))["model"]  # elsewhere: platform's name, no flags


def test_lr_schedule_constant_then_linear_to_zero():
    assert [lr_factor(s, 10, 4) for s in range(11)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor(5, 10, 0) == 1.0


def test_image_pool_history_and_state_round_trip():
    pool = ImagePool(size=2, seed=0)
    first = pool.query(torch.zeros(2, 3, 4, 4))
    assert torch.equal(first, torch.zeros(2, 3, 4, 4))  # filling up: returns the inputs
    outs = [pool.query(torch.full((1, 3, 4, 4), float(i))) for i in range(1, 40)]
    assert any(o.sum() == 0 for o in outs)  # an old image came back
    assert any(o.sum() != 0 for o in outs)
    clone = ImagePool(size=2, seed=99)
    clone.load_state_dict(pool.state_dict(), torch.device("cpu"))
    x = torch.full((3, 3, 4, 4), 7.0)
    assert torch.equal(pool.query(x), clone.query(x))
    x.requires_grad_(True)
    off = ImagePool(0, 0).query(x)
    assert torch.equal(off, x) and not off.requires_grad


def test_few_steps_write_events_checkpoints_and_export(tiny_cfg):
    cfg = tiny_cfg("train.keep_checkpoints=1", "train.steps=4", "train.checkpoint_every=2")
    result = train(cfg)
    assert result.step == 4 and result.num_processes == 1
    assert all(math.isfinite(v) for v in result.losses.values())
    assert {"gan_ab", "gan_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "disc_a", "disc_b"} <= set(result.losses)
    run = Path(cfg.train.run_dir)
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [4]  # keep_checkpoints=1 pruned step 2
    acc = read_events(run / "tb")
    tags = acc.Tags()
    assert {"loss/cycle_a", "loss/disc_b", "loss/gen_total", "lr/gen", "lr/disc"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/cycle_a")] == [1, 2, 3, 4]
    lrs = [e.value for e in acc.Scalars("lr/gen")]  # LR after each step: decay over the last 2 of 4
    assert lrs == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])
    assert {"images/a2b", "images/b2a"} <= set(tags["images"])
    image = acc.Images("images/a2b")[-1]
    assert (image.width, image.height) == (3 * 32 + 4 * 2, 32 + 2 * 2)  # real | fake | rec, padded grid
    assert (run / "config.yaml").read_text().count("resnet_6blocks") == 1

    # the export holds both generators and the model config; it reproduces the trained generator
    weights, meta = checkpoint.read_generators(result.generators_file)
    assert meta["step"] == "4" and meta["model"]["ngf"] == 8
    gen = nets.build_generator(ModelConfig(**meta["model"]))
    gen.load_state_dict(weights["gen_ab"])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(gen(x), result.generators["gen_ab"](x))


def test_interrupted_save_leaves_previous_checkpoint_usable(tiny_cfg):
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0")
    train(cfg)
    run = Path(cfg.train.run_dir)
    half = checkpoint.checkpoints_dir(run) / ".step-0000003.tmp"  # what a crash during a save leaves
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert checkpoint.resolve_resume(run, "latest").name == "step-0000002"
    result = train(tiny_cfg("train.steps=4", "train.decay_steps=0"), resume="latest")
    assert result.step == 4 and not half.exists()  # the leftover was cleaned at the next save
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint folder"):
        checkpoint.resolve_resume(run, str(run))


def test_bf16_autocast_steps_are_finite_and_learn(tiny_cfg, monkeypatch):
    built = []  # the generators as training builds them, before any step

    def spy(model_cfg, *args):
        net = build_generator(model_cfg, *args)
        built.append({k: v.clone() for k, v in net.state_dict().items()})
        return net

    build_generator = nets.build_generator
    monkeypatch.setattr(nets, "build_generator", spy)
    cfg = tiny_cfg("train.mixed_precision=bf16", "loss.style_ab=10", "loss.vgg_weights=random", run="bf16")
    assert cfg.train.mixed_precision == "bf16"
    result = train(cfg)
    assert all(math.isfinite(v) for v in result.losses.values())
    assert "style_ab" in result.losses
    assert all(p.dtype == torch.float32 for p in result.generators["gen_ab"].parameters())  # fp32 master weights
    trained = result.generators["gen_ab"].state_dict()
    moved = [float((trained[k] - v).abs().max()) for k, v in built[0].items() if v.is_floating_point()]
    assert min(moved) > 1e-5  # every tensor learned (4 Adam steps of lr 2e-4 move each by ~1e-4 or more)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)  # a second Accelerator with another precision
    GradientState._reset_state()
    fp32 = train(tiny_cfg("train.mixed_precision=no", "loss.style_ab=10", "loss.vgg_weights=random", run="fp32"))
    assert fp32.losses["gen_total"] != result.losses["gen_total"]  # autocast really ran in bf16


def test_style_terms_per_layer_logged_batch_target_pairs_fake_i_with_real_i_reference_fixed(tiny_cfg, folders,
                                                                                             monkeypatch):
    """style_target=batch on B->A, a reference painting on A->B: per-layer terms in the logs, fake i judged
    against real i of the step, the reference target independent of the batch and the only saved one."""
    from cyclestyle import training
    from cyclestyle.vgg import STYLE_LAYERS

    captured = {}

    def spy(*args, **kwargs):
        captured["objective"] = args[-1]
        return generator_backward(*args, **kwargs)

    generator_backward = training.generator_backward
    monkeypatch.setattr(training, "generator_backward", spy)
    painting = sorted(folders[1].glob("*.jpg"))[0]
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=0", "train.batch_size=2", "loss.vgg_weights=random",
                   "loss.style_ab=1", "loss.style_ba=1", "loss.style_target=batch", f"loss.style_reference={painting}")
    result = train(cfg)
    per_layer = [f"style_{d}/{name}" for d in ("ab", "ba") for name in STYLE_LAYERS]
    assert set(per_layer) <= set(result.losses)
    for d in ("ab", "ba"):  # the total is the mean of the per-layer terms
        layers = [result.losses[f"style_{d}/{name}"] for name in STYLE_LAYERS]
        assert result.losses[f"style_{d}"] == pytest.approx(sum(layers) / len(layers), rel=1e-5)
    tags = read_events(result.run_dir / "tb").Tags()["scalars"]
    assert {"loss/style_ab", "loss/style_ba", *(f"loss/{t}" for t in per_layer)} <= set(tags)
    shared = torch.load(result.checkpoint / "shared_state.pt", weights_only=True)
    assert "style_target_ab" in shared and "style_target_ba" not in shared  # batch keeps no state

    objective = captured["objective"]
    torch.manual_seed(0)
    real, other = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        values = {}
        for case, fake, target in (("same", real, real), ("swapped", real.flip(0), real), ("other", real, other)):
            for d in ("ab", "ba"):
                _, terms = objective.style_terms(d, fake, target)
                values[d, case] = terms[f"style_{d}"].item()
    assert values["ba", "same"] == 0 and values["ba", "swapped"] > 0  # each fake against its own real image
    assert values["ab", "same"] == values["ab", "other"] > 0  # the painting's Gram, whatever the batch


def test_gradient_accumulation_matches_larger_batch(tiny_cfg):
    """batch 2 == 2 micro-batches of 1: the same samples (position-addressed stream), the same mean gradient.

    Compared on Adam's first moment after one step, (1 - beta1) * grad: linear in the gradient, so a sum
    instead of a mean (2x) shows, where the weights would not (Adam's first step is about lr * sign(grad))."""
    common = ("train.pool_size=0", "train.steps=1", "train.decay_steps=0", "loss.lambda_identity=0")
    big = train(tiny_cfg(*common, "train.batch_size=2", run="big"))
    acc = train(tiny_cfg(*common, "train.batch_size=1", "train.grad_accum=2", run="acc"))
    assert acc.step == 1
    for name in ("optimizer.bin", "optimizer_1.bin"):  # generators, discriminators
        moments = [torch.load(run.checkpoint / name, weights_only=True)["state"] for run in (big, acc)]
        assert moments[0].keys() == moments[1].keys() and moments[0]
        m_big, m_acc = (torch.cat([m[k]["exp_avg"].flatten() for k in sorted(m)]) for m in moments)
        # batched convolutions round differently from single-image ones: relative error over all moments
        # (the biases in front of instance norms have ~0, pure-noise grads, so not tensor by tensor)
        assert (m_big - m_acc).norm() <= 1e-4 * m_big.norm(), name
        assert m_big.abs().max() > 1e-4  # the moments compared are not all ~0


def test_generator_loss_back_propagated_in_parts_equals_one_backward_of_the_sum():
    """The two-pass backward (A->B->A with B's identity, B->A->B with A's identity) gives the grads of
    the reference's one backward of the summed loss."""
    import itertools

    from accelerate import Accelerator

    from cyclestyle import losses
    from cyclestyle.training import generator_backward

    torch.manual_seed(0)
    cfg = ModelConfig(generator="resnet_6blocks", ngf=8, ndf=8)
    gab, gba = nets.build_generator(cfg), nets.build_generator(cfg)
    da, db = nets.build_discriminator(cfg).requires_grad_(False), nets.build_discriminator(cfg).requires_grad_(False)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    gen_params = list(itertools.chain(gab.parameters(), gba.parameters()))

    objective = losses.CycleGANObjective(LossConfig(gan_mode="lsgan", lambda_cycle=10.0, lambda_identity=0.25))
    loss, terms, fake_a, fake_b = generator_backward(Accelerator(cpu=True), gab, gba, da, db, a, b, objective)
    split = [p.grad.clone() for p in gen_params]
    assert sorted(terms) == ["cycle_a", "cycle_b", "gan_ab", "gan_ba", "idt_a", "idt_b"]
    assert all(p.grad is None for p in itertools.chain(da.parameters(), db.parameters()))

    for p in gen_params:
        p.grad = None
    fb, fa = gab(a), gba(b)
    total = (losses.gan_generator_loss("lsgan", db(fb)) + losses.gan_generator_loss("lsgan", da(fa))
             + 10.0 * (losses.l1(gba(fb), a) + losses.l1(gab(fa), b))
             + 2.5 * (losses.l1(gba(a), a) + losses.l1(gab(b), b)))
    total.backward()
    assert float(loss) == pytest.approx(float(total.detach()), rel=1e-5)
    assert torch.allclose(fake_b, fb, atol=1e-6) and torch.allclose(fake_a, fa, atol=1e-6)  # batched = single
    # batched convolutions round differently from single-image ones: compare each tensor's relative error
    # (measured: <1e-6 relative; the biases in front of instance norms have ~1e-6 grads, hence the 1e-6 floor)
    for p, g in zip(gen_params, split):
        assert (g - p.grad).norm() <= 1e-5 * p.grad.norm() + 1e-6
    assert max(float(g.abs().max()) for g in split) > 1e-3  # the grads compared are not all ~0


def test_fused_adam_is_used_on_cpu_and_updates_like_foreach_adam():
    from cyclestyle.training import make_adam

    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(7)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    results = []
    for kind in ("fused", "foreach"):
        ps = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = make_adam(ps, 1e-2, (0.5, 0.999)) if kind == "fused" else torch.optim.Adam(
            ps, lr=1e-2, betas=(0.5, 0.999), foreach=True)
        assert bool(opt.param_groups[0]["fused"]) == (kind == "fused")
        for step_grads in grads:
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append(ps)
    for p, q, w in zip(*results, weights):
        assert (p - w).abs().max() > 1e-2  # it moved: three steps of ~lr
        assert torch.allclose(p, q, rtol=0, atol=1e-6)


def test_compile_path_compiles_and_runs_with_finite_losses(tiny_cfg):
    from torch._dynamo.utils import counters

    counters.clear()
    result = train(tiny_cfg("train.compile=true", "train.steps=2", "train.decay_steps=0"))
    # really compiled, not run eagerly after a swallowed error: every captured frame went through
    # AOTAutograd and inductor built the graphs (suppress_errors would leave frames "total" above "ok")
    assert counters["frames"]["ok"] == counters["frames"]["total"] >= 2
    assert counters["aot_autograd"]["ok"] == counters["aot_autograd"]["total"] >= 2
    assert counters["inductor"]
    assert result.step == 2 and all(math.isfinite(v) for v in result.losses.values())
    weights, _ = checkpoint.read_generators(result.generators_file)  # compiled modules unwrap to plain state dicts
    assert not any("_orig_mod" in k for k in weights["gen_ab"])


def test_hinge_r1_and_unet_run(tiny_cfg):
    result = train(tiny_cfg("loss.gan_mode=hinge", "loss.r1_gamma=1.0", "model.generator=unet_128",
                            "data.load_size=128", "data.crop_size=128", "train.steps=1", "train.decay_steps=0"))
    assert result.losses["r1_a"] > 0 and math.isfinite(result.losses["gen_total"])


def test_cli_train_and_bad_folder_error(folders, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "cyclestyle", "train", *tiny_overrides(folders, tmp_path / "cli"),
            "train.steps=1", "train.decay_steps=0"]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "checkpoint" in done.stdout and (tmp_path / "cli/generators/last.safetensors").is_file()
    bad = subprocess.run(args + [f"data.root_a={tmp_path / 'missing'}", f"train.run_dir={tmp_path / 'x'}"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert f"data.root_a folder not found: {tmp_path / 'missing'}" in bad.stderr and "Traceback" not in bad.stderr


def launch_two_processes(script_args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           str(ROOT / "tests" / "ddp_train.py"), *script_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_two_process_ddp_on_cpu_resumes_exactly_and_stops_together_on_a_nan(folders, tmp_path):
    """A real 2-process run (gloo) through accelerate launch: both ranks end with identical weights, and
    4 steps straight equal 2 + resume + 2 in every tensor of the checkpoint (both ranks' pools and RNGs).
    Then a NaN on rank 1 only stops both ranks at the same step with the same message (agreed, not per rank)."""
    from tests.test_resume import assert_same_checkpoints

    out = tmp_path / "ranks"
    done = launch_two_processes([
        str(out), *tiny_overrides(folders, tmp_path / "ddp"), "train.steps=4", "train.decay_steps=2",
        "train.checkpoint_every=2", "loss.style_ab=1", "loss.style_target=mean", "loss.vgg_weights=random",
        "train.pool_size=2", "model.dropout=true", "train.ema=true",
        # validation: each rank featurises its share of 5 images (3 + 2), gathered back in subset order
        "validation.every=4", f"validation.root_a={folders[0]}", f"validation.root_b={folders[1]}",
        "validation.num_images=5", "validation.batch_size=2", "validation.inception_weights=random"])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["targets"] == ranks[1]["targets"]  # style targets folded in the all-process mean
    assert ranks[0]["pool"] != ranks[1]["pool"]  # each rank saw its own data
    straight, resumed = map(Path, ranks[0]["checkpoints"])
    compared = assert_same_checkpoints(straight, resumed)
    assert {"rank_state_0.pt", "rank_state_1.pt", "random_states_0.pkl", "random_states_1.pkl"} <= set(compared)
    errors = [r["nan_error"] for r in ranks]
    assert errors[0] == errors[1], errors
    assert errors[0].startswith("non-finite loss on process 1 for 2 step(s) up to step 2; stopped without saving")
    assert not checkpoint.list_checkpoints(tmp_path / "ddp" / "nan")

    # The validation scores logged by the 2-process run equal those of one process on the final weights:
    # each image's features gathered exactly once, the padding rows of the shorter share dropped.
    from cyclestyle.config import load_config
    from cyclestyle.evaluation import frechet_distance, kid, load_inception, statistics
    from cyclestyle.translate import Translator
    from cyclestyle.validation import load_subset, to_uint8

    run = tmp_path / "ddp" / "straight"
    cfg = load_config(run / "config.yaml")
    inception = load_inception("random", "cpu")
    translator = Translator.load(run, direction="a2b", device="cpu", precision="fp32")
    fake = inception(to_uint8(translator.translate_tensor(load_subset(folders[0], cfg, "a"))))
    real = inception(to_uint8(load_subset(folders[1], cfg, "b")))
    events = read_events(run / "tb")
    assert [e.step for e in events.Scalars("val/fid_a2b")] == [4]
    mu1, s1 = statistics(fake)
    mu2, s2 = statistics(real)
    assert events.Scalars("val/fid_a2b")[0].value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-3)
    assert events.Scalars("val/kid_a2b")[0].value == pytest.approx(kid(fake, real)["kid_mean"], rel=1e-3)
    assert (run / "generators" / "best.safetensors").is_file()


def test_two_process_ddp_with_vgg_style_codes(folders, tmp_path):
    """Style codes under a real 2-process run: the frozen VGG inside each generator is left out of DDP's
    gradient reduction, the trained mapping, FiLM weights and mean codes agree on both ranks, and a resumed
    run equals the straight one in every tensor."""
    from tests.test_resume import assert_same_checkpoints

    out = tmp_path / "ranks"
    done = launch_two_processes([
        str(out), *tiny_overrides(folders, tmp_path / "ddp"), "train.steps=4", "train.decay_steps=2",
        "train.checkpoint_every=2", "model.style_code=vgg", "loss.vgg_weights=random", "loss.code_hue_jitter=true",
        "train.pool_size=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["params"]["gen_ab.mean_code"] != 0 and ranks[0]["params"]["gen_ab.code_count"] == 4
    assert any(k.startswith("gen_ab.encoder.head.") for k in ranks[0]["params"])
    assert_same_checkpoints(*map(Path, ranks[0]["checkpoints"]))


def test_ema_decay_warms_up_so_early_averages_follow_the_weights():
    from torch import nn
    from torch.optim.swa_utils import AveragedModel

    from cyclestyle.training import WarmupEMA, ema_decay_at

    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(0.999, 10**6) == 0.999  # the configured decay once warm
    net = nn.Linear(1, 1, bias=False)
    fn = WarmupEMA(0.999)
    ema = AveragedModel(net, multi_avg_fn=fn, use_buffers=True)
    expected = None
    for step in range(1, 6):  # the weight walks 1, 2, ..., 5
        net.weight.data.fill_(float(step))
        fn.step = step
        ema.update_parameters(net)
        d = ema_decay_at(0.999, step)
        expected = float(step) if expected is None else d * expected + (1 - d) * step
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert ema.module.weight.item() == pytest.approx(4.402, abs=1e-3)  # a fixed 0.999 would still be at 1.004
