"""One spelling for an open_clip model (`--model NAME [--pretrained FILE]`); the older one with a notice."""

from __future__ import annotations

import pytest

from clipline.commands.model_choice import ModelChoiceConfig, encoder_spec, normalised
from pretrain.errors import PretrainError


def test_old_spelling_is_rewritten_with_a_one_line_notice(capsys: pytest.CaptureFixture[str]) -> None:
    choice = normalised(ModelChoiceConfig(checkpoint="open_clip:ViT-B-32:epoch_10.pt"))
    assert choice == ModelChoiceConfig(model="ViT-B-32", pretrained="epoch_10.pt")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model ViT-B-32 --pretrained epoch_10.pt" in err and "deprecated" in err


def test_run_dirs_and_models_become_the_retrieval_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoder_spec(ModelChoiceConfig(checkpoint="runs/demo")) == "runs/demo"
    assert encoder_spec(ModelChoiceConfig(model="clip-tiny-64")) == "open_clip:clip-tiny-64"
    assert encoder_spec(ModelChoiceConfig(model="RN50", pretrained="w.pt")) == "open_clip:RN50:w.pt"
    assert encoder_spec(ModelChoiceConfig(), required=False) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("choice", [ModelChoiceConfig(), ModelChoiceConfig(checkpoint="r", model="m"),
                                    ModelChoiceConfig(pretrained="w.pt"),
                                    ModelChoiceConfig(checkpoint="open_clip:RN50", model="RN50")])
def test_ambiguous_or_missing_choices_are_user_errors(choice: ModelChoiceConfig) -> None:
    with pytest.raises(PretrainError, match="`checkpoint`|`pretrained`"):
        encoder_spec(choice)
