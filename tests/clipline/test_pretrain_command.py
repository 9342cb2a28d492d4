"""`clipline pretrain`'s flags reach the typed run config once, parsed where they enter."""

from __future__ import annotations

import pytest

from clipline.commands.pretrain import PretrainCommandConfig, build_parser, resolve_config
from clipline.flags import config_from_args
from pretrain.config import validate
from pretrain.errors import PretrainError


def resolved(*argv: str):
    return resolve_config(config_from_args(PretrainCommandConfig, build_parser().parse(list(argv))))


def test_train_data_weights_become_a_tuple_and_the_default_is_the_chosen_recipe() -> None:
    config = resolved("--train-data", "a::b", "--train-data-weights", "3,1", "optim.lr=5e-4")
    assert config.data.train_data == "a::b" and config.data.train_data_weights == (3.0, 1.0)
    assert config.optim.lr == 5e-4
    assert config.name == "emoji-lit-rn-raw" and config.model.name == "clip-rn-64-minilm-raw"
    assert config.data.background == "random"
    assert config.model.lock_text and config.loss.positives == "group"
    validate(config)


def test_bad_weights_are_one_clear_error() -> None:
    with pytest.raises(PretrainError, match="must be numbers separated by commas"):
        resolved("--train-data", "a::b", "--train-data-weights", "x,1")
    with pytest.raises(PretrainError, match="one weight >= 0 per"):
        validate(resolved("--train-data", "a::b::c", "--train-data-weights", "3,1"))
    with pytest.raises(PretrainError, match="one weight >= 0 per"):
        validate(resolved("--train-data", "a::b", "--train-data-weights", "0,0"))
