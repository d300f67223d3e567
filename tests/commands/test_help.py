"""`var-jax <cmd> --help`: every option with a default shows it; old spellings stay hidden."""
import argparse
import re

import pytest

from var_jax.cli import COMMANDS, build_parser, main


def subparsers():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_every_default(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # unwrapped
    for action in subparsers()[name]._actions:
        if (not action.option_strings or action.help == argparse.SUPPRESS or action.required
                or action.default in (None, argparse.SUPPRESS)):
            continue
        assert f"(default: {action.default})" in text, (name, action.dest)


def test_old_spellings_work_but_are_hidden(capsys):
    parsers = subparsers()
    args = parsers["sample"].parse_args(["--classes", "1", "--var", "v", "--vae", "a",
                                         "--batch", "3"])
    assert args.batch_size == 3
    args = parsers["reconstruct"].parse_args(["x.png", "--weights", "w", "--resolution", "512",
                                              "--out-dir", "o"])
    assert (args.vae, args.image_size, args.out) == ("w", 512, "o")
    for name, old in [("sample", "--batch"), ("edit", "--batch"), ("reconstruct", "--weights"),
                      ("reconstruct", "--resolution"), ("reconstruct", "--out-dir")]:
        assert not re.search(rf"{old}\b(?!-)", parsers[name].format_help()), (name, old)
