"""`clipline finetune METHOD|sweep` end to end on a real (micro) checkpoint and real shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clipline.cli import main as clipline_main
from clipline.commands.finetune import main
from evaluate.shard_encoding import EncodingConfig
from evaluate.zeroshot import encode_labelled_images
from finetune.errors import FinetuneError
from finetune.methods.adapter_io import AdapterPredictor, load_adapter
from pretrain.encoder import Encoder
from tests.clipline.running import error_line
from tests.finetune.fakes import save_tiny_checkpoint, write_shards

CLASSES = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("finetune_cli")
    return {
        "run": str(save_tiny_checkpoint(root / "run", seed=0)),
        "other_run": str(save_tiny_checkpoint(root / "other", seed=1)),
        "train": str(write_shards(root / "train", CLASSES, per_class=12)),
        "eval": str(write_shards(root / "eval", CLASSES, per_class=4)),
        "cache": str(root / "cache"),
        "root": str(root),
    }


def common(setup: dict[str, str], out: str) -> list[str]:
    return ["--checkpoint", setup["run"], "--train-data", setup["train"], "--eval-data", setup["eval"],
            "--out", out, "--feature-cache", setup["cache"]]


def run_method(setup: dict[str, str], method: str, name: str, *flags: str) -> tuple[Path, dict]:
    """`clipline finetune METHOD` into a fresh directory `name` with `flags`: that directory and its report.json."""
    out = Path(setup["root"]) / name
    main([method, *common(setup, str(out)), *flags])
    return out, json.loads((out / "report.json").read_text())


def eval_top1(predictor: AdapterPredictor, eval_data: str) -> float:
    """The adapter's top-1 on `eval_data`, the shards encoded by zero-shot's encoding loop (the predictor stands in
    for an encoder)."""
    encoded = encode_labelled_images(predictor, eval_data, EncodingConfig(num_workers=0), label_field=None)
    truth = torch.tensor([CLASSES.index(name) for name in encoded.labels])
    return (predictor.logits(encoded.features).argmax(1) == truth).float().mean().item()


@pytest.mark.parametrize("method", ["linear-probe", "tip-adapter"])
def test_method_writes_adapter_and_report_usable_for_prediction(setup: dict[str, str], method: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, report = run_method(setup, method, method, "--shots", "4", "--seed", "2", "--class-weight")
    assert f"{method} 4-shot seed 2: top1" in capsys.readouterr().out
    assert report["num_train"] == 16 and report["num_val"] == 16
    assert report["result"]["n"] == 16 and set(report["result"]["per_class"]) == set(CLASSES)
    assert report["config"]["class_weight"] is True
    predictor = load_adapter(out, Encoder.load(setup["run"]))
    assert predictor.classnames == CLASSES
    assert eval_top1(predictor, setup["eval"]) == pytest.approx(report["result"]["top1"])


def test_wise_ft_reports_accuracy_along_alpha(setup: dict[str, str]) -> None:
    _, report = run_method(setup, "wise-ft", "wise", "--shots", "2")
    curve = report["alpha_curve"]
    assert [row["alpha"] for row in curve] == [round(0.1 * i, 1) for i in range(11)]
    assert curve[0]["top1"] == pytest.approx(report["zeroshot"]["top1"])


def test_sweep_writes_json_table_and_plot(setup: dict[str, str]) -> None:
    out = Path(setup["root"]) / "sweep"
    main(["sweep", *common(setup, str(out)), "--methods", "linear-probe,tip-adapter", "--shots", "1,2",
          "--seeds", "1,2"])
    payload = json.loads((out / "sweep.json").read_text())
    assert len(payload["runs"]) == 2 * 2 * 2
    assert {(r["method"], r["shots"], r["seeds"]) for r in payload["summary"]} == {
        (m, s, 2) for m in ("linear-probe", "tip-adapter") for s in (1, 2)
    }
    table = (out / "sweep.md").read_text()
    assert "| zero-shot |" in table and "| linear-probe |" in table
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_failing(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    return error_line(["finetune", *args], capsys, alone=True)


def test_more_shots_than_a_class_has_is_one_line_naming_the_class(setup: dict[str, str], capsys) -> None:
    err = run_failing(["linear-probe", *common(setup, setup["root"] + "/x"), "--shots", "13"], capsys)
    assert "class 'red' has only 12 training samples but --shots 13" in err


def test_eval_classes_not_in_train_is_one_line(setup: dict[str, str], capsys) -> None:
    evaluation = write_shards(Path(setup["root"]) / "eval5", [*CLASSES, "purple"], per_class=2)
    args = ["tip-adapter", *common(setup, setup["root"] + "/x"), "--shots", "2", "--eval-data", str(evaluation)]
    assert "'purple'" in run_failing(args, capsys)


def test_bad_checkpoint_unknown_method_and_bad_flag_are_one_line(setup: dict[str, str], capsys) -> None:
    args = common(setup, setup["root"] + "/x")
    args[1] = setup["root"] + "/no-such-run"
    run_failing(["linear-probe", *args], capsys)
    assert "unknown method 'svm'" in run_failing(["svm", *common(setup, "x")], capsys)
    run_failing(["linear-probe", *common(setup, "x"), "--shots", "many"], capsys)


def test_adapter_for_another_checkpoint_is_refused(setup: dict[str, str]) -> None:
    out, _ = run_method(setup, "linear-probe", "probe-for-other", "--shots", "1")
    with pytest.raises(FinetuneError, match="trained on checkpoint"):
        load_adapter(out, Encoder.load(setup["other_run"]))


def test_full_finetune_saves_the_tuned_tower_and_predicts_with_it(setup: dict[str, str]) -> None:
    out, report = run_method(setup, "full-finetune", "full", "--shots", "2", "--method.min-steps", "5",
                             "--method.epochs", "1")
    assert report["hyperparameters"]["steps"] == 5 and report["config"]["method"]["min_steps"] == 5
    assert (out / "image_tower.safetensors").is_file()
    encoder = Encoder.load(setup["run"])
    predictor = load_adapter(out, encoder)
    images = torch.rand(2, 3, 16, 16)
    assert not torch.allclose(predictor.encode_image(images), encoder.encode_image(images))
    assert eval_top1(predictor, setup["eval"]) == pytest.approx(report["result"]["top1"])


def test_zeroshot_command_predicts_with_a_saved_adapter(setup: dict[str, str], capsys) -> None:  # noqa: ANN001
    adapter, trained = run_method(setup, "linear-probe", "probe-for-zeroshot", "--shots", "4", "--seed", "3")
    capsys.readouterr()
    out = Path(setup["root"]) / "adapter-report" / "r.json"
    base = ["zeroshot", "--data", setup["eval"], "--out", str(out), "--num-workers", "0"]
    clipline_main([*base, "--checkpoint", setup["run"], "--adapter", str(adapter)])
    stdout = capsys.readouterr().out
    report = json.loads(out.read_text())
    # the adapter's own evaluation at training time, reproduced through `clipline zeroshot`
    assert report["top1"] == pytest.approx(trained["result"]["top1"])
    assert report["macro_f1"] == pytest.approx(trained["result"]["macro_f1"])
    assert report["adapter"]["method"] == "linear-probe" and report["adapter"]["shots"] == 4
    assert report["adapter"]["prompts_top1"] == pytest.approx(trained["zeroshot"]["top1"])
    assert "adapter linear-probe (4-shot, seed 3)" in stdout
    assert "<h1>linear-probe 4-shot classification</h1>" in (out.parent / "r.html").read_text()

    def failing(argv: list[str]) -> str:
        return error_line([*base, *argv], capsys)

    assert "trained on checkpoint" in failing(["--checkpoint", setup["other_run"], "--adapter", str(adapter)])
    assert "needs the --checkpoint" in failing(["--model", "fake", "--adapter", str(adapter)])
    assert "cannot be combined with --adapter" in failing(
        ["--checkpoint", setup["run"], "--adapter", str(adapter), "--classes", setup["train"]])
    assert "not an adapter directory" in failing(["--checkpoint", setup["run"], "--adapter", setup["train"]])
    extra = write_shards(Path(setup["root"]) / "eval-purple", [*CLASSES, "purple"], per_class=2)
    err = failing(["--checkpoint", setup["run"], "--adapter", str(adapter), "--data", str(extra)])
    assert "classes the adapter was not trained on: 'purple'" in err
