"""`var-jax train-tokenizer`: argument wiring and config-type errors (training itself is tested
through the loop in test_tokenizer_resume.py)."""
import argparse
import os

import pytest

from var_jax.commands import train_tokenizer

EXPERIMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "experiments")


def exp(name):
    return os.path.join(EXPERIMENTS, name)


def parse(*argv):
    parser = argparse.ArgumentParser()
    train_tokenizer.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_arguments():
    args = parse("--config", exp("tokenizer_digits.py"), "--workdir", "/tmp/w",
                 "--set", "loop.total_steps=5", "--set", "loss.disc_weight=0.1")
    assert args.overrides == ["loop.total_steps=5", "loss.disc_weight=0.1"]
    assert args.export is None


def test_transformer_config_is_refused():
    with pytest.raises(ValueError, match="not a TokenizerTrainConfig"):
        train_tokenizer.run(parse("--config", exp("tiny_cpu.py"), "--workdir", "/tmp/w"))


def test_experiment_configs_load_and_plug_into_the_transformer_configs():
    from var_jax.train.experiment import load_experiment

    digits = load_experiment(exp("tokenizer_digits.py"))
    assert digits.vqvae == load_experiment(exp("tiny_cpu.py")).vae
    imagenet = load_experiment(exp("tokenizer_imagenet256.py"))
    assert imagenet.vqvae == load_experiment(exp("var_d16_256.py")).vae
    assert not imagenet.loss.perceptual and imagenet.loss.gan   # LPIPS only with weight files
