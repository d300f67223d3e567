"""`var-jax train` (alias `train-tokenizer`): dispatch on the config's type, config errors, and the
tokenizer's token space taken by a transformer run (training itself: tests/train/)."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import pytest

from var_jax.cli import build_parser, main
from var_jax.commands.train import with_tokenizer_space
from var_jax.convert import save_converted
from var_jax.train.experiment import load_experiment
from var_jax.vqvae import VQVAE

EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments")


def exp(name):
    return os.path.join(EXPERIMENTS, name)


def test_train_tokenizer_is_the_train_command():
    parser = build_parser()
    a = parser.parse_args(["train", "--config", "c.py", "--workdir", "w"])
    b = parser.parse_args(["train-tokenizer", "--config", "c.py", "--workdir", "w"])
    assert a._run is b._run


def test_a_config_of_another_type_is_refused(tmp_path, capsys):
    path = tmp_path / "other.py"
    path.write_text("def get_config():\n    return {'steps': 1}\n")
    assert main(["train", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (
        f"var-jax train: error: --config {path}: get_config() returns a dict, not a "
        "VARTrainConfig (transformer) or a TokenizerTrainConfig (tokenizer).\n")
    assert not (tmp_path / "w").exists()


def test_a_transformer_run_takes_a_converted_tokenizers_token_space(tmp_path, capsys):
    config = load_experiment(exp("tiny_cpu.py"))
    vae = dataclasses.replace(config.vae, vocab_size=64, patch_nums=(1, 2, 4), image_size=16,
                              using_sa=False)
    params = VQVAE(vae).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    path = save_converted(tmp_path / "tok", vae, params)
    adopted = with_tokenizer_space(dataclasses.replace(config, tokenizer=path))
    assert adopted.vae == vae and adopted.data.image_size == 16
    assert (adopted.var.patch_nums, adopted.var.vocab_size) == ((1, 2, 4), 64)
    assert adopted.var.depth == config.var.depth
    assert "training on its tokens (image size 16, scales 1,2,4, 64 codes" in (
        capsys.readouterr().err)
    with pytest.raises(FileNotFoundError, match="--set tokenizer=nowhere: no such file"):
        with_tokenizer_space(dataclasses.replace(config, tokenizer="nowhere"))


def test_experiment_configs_load_and_plug_into_the_transformer_configs():
    digits = load_experiment(exp("tokenizer_digits.py"))
    assert digits.vqvae == load_experiment(exp("tiny_cpu.py")).vae
    imagenet = load_experiment(exp("tokenizer_imagenet256.py"))
    assert imagenet.vqvae == load_experiment(exp("var_d16_256.py")).vae
    assert not imagenet.loss.perceptual and imagenet.loss.gan   # LPIPS only with weight files
