"""Zero-shot classifier and evaluator on encoders whose answer is known."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from data_tools.loader import LoaderConfig, make_loader
from evaluate.errors import EvaluateError
from evaluate.shard_encoding import EncodingConfig
from evaluate.templates import fill_template
from evaluate.zeroshot import ZeroShotClassifier, ZeroShotEvaluator
from tests.finetune.fakes import ColourEncoder, tiny_encoder, write_shards
from tests.tar_writing import write_tar

IN_PROCESS = EncodingConfig(num_workers=0)  # no loader worker processes
CLASSES = ["cat", "dog", "bird", "fish", "horse"]
TEMPLATES = ["a photo of a {c}.", "{c}", "a drawing of the {c}"]


def test_weights_are_the_renormalised_mean_of_normalised_prompt_embeddings() -> None:
    encoder = tiny_encoder()
    clf = ZeroShotClassifier.build(encoder, CLASSES, TEMPLATES, batch_size=4)  # batches cut across classes
    assert clf.weights.shape == (5, encoder.embed_dim)
    for c, name in enumerate(CLASSES):
        prompts = encoder.encode_text([fill_template(t, name) for t in TEMPLATES])  # (T, D)
        mean = torch.nn.functional.normalize(prompts, dim=-1).mean(dim=0)
        torch.testing.assert_close(clf.weights[c], mean / mean.norm(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clf.weights.norm(dim=1), torch.ones(5))
    images = torch.nn.functional.normalize(torch.randn(3, encoder.embed_dim), dim=-1)
    torch.testing.assert_close(clf.logits(images), images @ clf.weights.T)


@pytest.mark.parametrize("label", ["cls", "json"], ids=["cls", "labels-from-json"])
def test_perfect_encoder_scores_one(tmp_path: Path, label: str) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=4, label=label)
    evaluator = ZeroShotEvaluator(data=data, templates=TEMPLATES, encoding=IN_PROCESS)
    report = evaluator.evaluate(ColourEncoder(CLASSES)).report
    # without .cls there are no dataset classes either: the labels seen, sorted
    assert report["classes"] == (CLASSES if label == "cls" else sorted(CLASSES))
    assert report["top1"] == 1.0
    assert report["macro_f1"] == 1.0
    assert report["n"] == 20
    assert all(row["recall"] == 1.0 and row["support"] == 4 for row in report["per_class"].values())


def test_permuted_encoder_scores_the_known_value(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=4)
    # colours of cat/dog/bird look like dog/bird/cat; fish and horse stay right -> 2 of 5 classes right
    encoder = ColourEncoder(CLASSES, perm=[1, 2, 0, 3, 4])
    result = ZeroShotEvaluator(data=data, templates="generic", encoding=IN_PROCESS).evaluate(encoder)
    report = result.report
    assert report["top1"] == pytest.approx(2 / 5)
    assert report["top5"] == 1.0
    assert report["per_class"]["cat"]["recall"] == 0.0
    assert report["per_class"]["fish"]["recall"] == 1.0
    assert report["confusion"][0] == [0, 4, 0, 0, 0]  # every cat predicted as dog
    assert result.logits.shape == (20, 5)
    metrics = dict(ZeroShotEvaluator(data=data, name="zs", encoding=IN_PROCESS).run(encoder))
    assert set(metrics) == {"zs/top1", "zs/top5", "zs/mean_per_class_recall", "zs/macro_f1"}
    assert metrics["zs/top1"] == pytest.approx(2 / 5)


def test_label_field_and_user_classnames(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=3, label_fields={"legs": ["four", "two"]})
    # classes 0,2,4 -> "four", 1,3 -> "two" (write_shards cycles the names); images embed by that name
    encoder = ColourEncoder(["four", "two"], perm=[0, 1, 0, 1, 0])
    report = ZeroShotEvaluator(data=data, label_field="legs", encoding=IN_PROCESS).evaluate(encoder).report
    assert report["classes"] == ["four", "two"]
    assert report["top1"] == 1.0
    assert report["per_class"]["four"]["support"] == 9
    with pytest.raises(EvaluateError, match="no 'colour' in their .json .* one of: legs"):
        ZeroShotEvaluator(data=data, label_field="colour", encoding=IN_PROCESS).evaluate(encoder)
    wrong_names = ZeroShotEvaluator(data=data, classnames=["kitten", "puppy"], encoding=IN_PROCESS)
    with pytest.raises(EvaluateError, match="not among the 2 classes: 'bird', 'cat'"):
        wrong_names.evaluate(encoder)


def test_prompt_names_differ_from_label_names(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=2)
    friendly = ["kitty", "puppy", "birdie", "fishy", "pony"]
    evaluator = ZeroShotEvaluator(data=data, classnames=CLASSES, prompt_names=friendly,
                                  encoding=IN_PROCESS)
    report = evaluator.evaluate(ColourEncoder(friendly)).report  # the encoder only knows the friendly words
    assert report["top1"] == 1.0
    assert report["classes"] == CLASSES
    assert report["prompt_names"]["cat"] == "kitty"


def test_unlabelled_shards_fail_after_the_first_batch(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=20, label="none")
    encoder = ColourEncoder(CLASSES)
    with pytest.raises(EvaluateError, match="no class label"):
        encoding = EncodingConfig(batch_size=8, num_workers=0)
        ZeroShotEvaluator(data=data, classnames=CLASSES, encoding=encoding).evaluate(encoder)
    assert encoder.encoded_images == 8


def test_corrupt_sample_is_skipped_and_counted(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=2)
    write_tar(data / "00009.tar", [("bad.png", b"not a png"), ("bad.txt", b"a caption"), ("bad.cls", b"0")])
    report = ZeroShotEvaluator(data=data, encoding=IN_PROCESS).evaluate(ColourEncoder(CLASSES)).report
    assert report["n"] == 10
    assert report["top1"] == 1.0
    assert sum(report["corrupt_skipped"].values()) == 1


def test_max_samples(tmp_path: Path) -> None:
    data = write_shards(tmp_path / "shards", CLASSES, per_class=4)
    encoding = EncodingConfig(max_samples=7, batch_size=3, num_workers=0)
    report = ZeroShotEvaluator(data=data, encoding=encoding).evaluate(ColourEncoder(CLASSES)).report
    assert report["n"] == 7


def test_matches_open_clip_reference_on_real_model(emoji_shards: Path) -> None:
    """Same predictions as open_clip's own zero-shot classifier on the same images."""
    encoder = tiny_encoder(seed=3)
    templates = ["an emoji of {c}.", "{c}"]
    result = ZeroShotEvaluator(data=emoji_shards, templates=templates, encoding=IN_PROCESS).evaluate(encoder)
    classes = result.report["classes"]
    reference_weights = open_clip.build_zero_shot_classifier(
        encoder.model, encoder.tokenizer, classes, [t.replace("{c}", "{}") for t in templates]
    )  # (D, C)
    loader = make_loader(emoji_shards, LoaderConfig(batch_size=48, num_workers=0), image_transform=encoder.preprocess)
    batch = next(iter(loader))  # the fixture's 48 samples
    with torch.no_grad():
        features = encoder.model.encode_image(batch["image"], normalize=True)
    reference_pred = (features @ reference_weights).argmax(dim=1)
    torch.testing.assert_close(result.classifier.weights, reference_weights.T, atol=1e-5, rtol=1e-4)
    assert torch.equal(result.logits.argmax(dim=1), reference_pred)
    assert result.report["top1"] == pytest.approx((reference_pred == batch["label"]).float().mean().item())
    assert sum(map(sum, result.report["confusion"])) == 48


def test_bf16_autocast_stays_close_to_fp32(emoji_shards: Path) -> None:
    encoder = tiny_encoder(seed=3)
    results = {
        precision: ZeroShotEvaluator(data=emoji_shards, encoding=EncodingConfig(precision=precision, num_workers=0))
        .evaluate(encoder)
        for precision in ("fp32", "bf16")
    }
    assert results["bf16"].report["precision"] == "bf16"
    torch.testing.assert_close(results["bf16"].image_features.norm(dim=1), torch.ones(48))
    assert (results["bf16"].logits - results["fp32"].logits).abs().max() < 0.03
