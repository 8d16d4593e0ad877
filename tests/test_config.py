import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from cyclestyle.cli import main
from cyclestyle.config import Config, ConfigError, load_config, to_yaml

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ["data.root_a=x", "data.root_b=y"]


def test_base_yaml_matches_schema_defaults():
    from_file = load_config(ROOT / "configs/base.yaml", ROOTS)
    from_schema = load_config(None, ROOTS)
    assert dataclasses.asdict(from_file) == dataclasses.asdict(from_schema)


def test_base_yaml_comments_every_key():
    lines = [line for line in (ROOT / "configs/base.yaml").read_text().splitlines()
             if line.startswith("  ") and ":" in line]
    uncommented = [line for line in lines if "#" not in line]
    assert not uncommented
    n_keys = sum(len(section) for section in dataclasses.asdict(Config()).values())
    assert len(lines) == n_keys


def test_precedence_defaults_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  steps: 10\n  decay_steps: 5\n")
    cfg = load_config(path, ROOTS + ["train.steps=20"])
    assert cfg.train.lr == 0.001  # file beats default
    assert cfg.train.steps == 20  # override beats file
    assert cfg.train.beta1 == 0.5  # default kept
    assert cfg.data.root_a == "x"


@pytest.mark.parametrize("override, expected", [
    ("train.lrr=1", "config key 'train.lrr'.*Did you mean: 'lr'"),
    ("train.lr=abc", "config key 'train.lr'.*could not be converted"),
    ("train.lr=-1", "config key 'train.lr': must be > 0"),
    ("data.crop_size=300", "config key 'data.crop_size'.*cannot exceed data.load_size"),
    ("data.crop_size=130", "config key 'data.crop_size': unet_128 needs a multiple of 128, got 130"),
    ("train.decay_steps=300000", "config key 'train.decay_steps'"),
    ("loss.gan_mode=wgan", "config key 'loss.gan_mode': 'wgan' is not one of lsgan, vanilla, hinge"),
    ("loss.style_target=bogus", "config key 'loss.style_target': 'bogus' is not one of mean, batch"),
    ("model.generator=resnet_99", "config key 'model.generator'"),
    ("train.beta1=1.5", "config key 'train.beta1'"),
    ("loss.style_ab=1 loss.style_reference=/no/such.jpg", "config key 'loss.style_reference': file not found"),
    ("nokey", "not of the form key=value"),
    ("model.unet_max_mult=3", "config key 'model.unet_max_mult': must be 1, 2, 4 or 8"),
    ("model.style_input=palette", "config key 'model.style_input': 'palette' is not one of image, normalized"),
    ("model.film_lr_mult=0", "config key 'model.film_lr_mult': must be > 0"),
    ("loss.lambda_cycle_b=-2", "config key 'loss.lambda_cycle_b': must be >= 0, got -2.0"),
    ("loss.code_hue_jitter=true", "config key 'loss.code_hue_jitter': .* it needs model.style_code=learned"),
])
def test_config_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, ROOTS + override.split(" "))


def test_style_reference_is_only_opened_when_a_style_loss_uses_it():
    cfg = load_config(None, ROOTS + ["loss.style_ab=0", "loss.style_reference=/no/such.jpg"])
    assert cfg.loss.style_reference == "/no/such.jpg"  # unused with the A->B style loss off: not checked


def test_bare_no_means_no_mixed_precision(tmp_path):
    assert load_config(None, ROOTS + ["train.mixed_precision=no"]).train.mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path, ROOTS).train.mixed_precision == "no"


def test_missing_required_key():
    with pytest.raises(ConfigError, match="config key 'data.root_a' is not set"):
        load_config(None, ["data.root_b=y"])


def test_missing_and_invalid_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ROOTS + ["train.lr=0.0003", "model.ngf=16"])
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_quickstart_config_loads_with_bundled_data():
    cfg = load_config(ROOT / "configs/quickstart.yaml")
    assert (ROOT / cfg.data.root_a).is_dir() and (ROOT / cfg.data.root_b).is_dir()
    assert cfg.loss.style_ab == 0  # offline: no VGG weights needed


def test_cli_show_config_and_one_line_errors(capsys):
    assert main(["show-config", *ROOTS, "train.lr=0.0005"]) == 0
    assert "lr: 0.0005" in capsys.readouterr().out
    assert main(["show-config", *ROOTS, "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lrr" in err and "Traceback" not in err


def test_cli_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "cyclestyle", "show-config", *ROOTS], capture_output=True,
                         text=True, check=True).stdout
    assert "root_a: x" in out


def test_texture_config_changes_only_the_upsampling():
    """configs/texture.yaml is the benchmark's texture recipe: the defaults with resize-conv upsampling."""
    from cyclestyle.config import diff, to_dict

    texture = load_config(ROOT / "configs/texture.yaml", ROOTS)
    base = load_config(ROOT / "configs/base.yaml", ROOTS)
    assert diff(to_dict(base), to_dict(texture)) == ["model.upsample: 'deconv' -> 'resize'"]


def test_styles_config_is_the_measured_code_following_recipe():
    """configs/styles.yaml: style codes with the settings the multi-painter benchmark measured (README)."""
    from cyclestyle.config import diff, to_dict

    styles = load_config(ROOT / "configs/styles.yaml", ROOTS)
    base = load_config(ROOT / "configs/base.yaml", ROOTS)
    assert diff(to_dict(base), to_dict(styles)) == [
        "loss.code_hue_jitter: False -> True", "loss.lambda_cycle_a: None -> 3.0", "loss.lambda_cycle_b: None -> 20.0",
        "model.film_lr_mult: 1.0 -> 3.0", "model.style_code: 'none' -> 'learned'"]
