"""`--label-field` on shards written like img2dataset's output: metadata as top-level keys of KEY.json.

The emoji fixture re-packed that way (keys "000000000", no .cls, no dataset.json,
the category a top-level string) must score exactly as the original, whose
categories sit under `labels` with a dataset.json class list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.tar_samples import iter_tar_samples
from tests.clipline.running import run_ok
from tests.finetune.fusion_fakes import tiny_checkpoint
from tests.tar_writing import write_tar

FIXTURE_SHARDS = Path(__file__).resolve().parents[1] / "fixtures" / "emoji_shards"


def img2dataset_shards(out: Path) -> Path:
    """The fixture's images and captions as img2dataset writes them: {url, key, status, caption, ...} at the top."""
    out.mkdir(parents=True)
    n = 0
    for shard in sorted(FIXTURE_SHARDS.glob("*.tar")):
        members = []
        for raw in iter_tar_samples(str(shard), lambda *_: None):
            meta = json.loads(raw["json"])
            key = f"{n:09d}"
            n += 1
            top = {"url": f"https://example.org/{meta['key']}.png", "key": key, "status": "success",
                   "error_message": None, "width": 64, "height": 64, "caption": meta["caption"],
                   "category": meta["labels"]["category"]}
            members += [(f"{key}.jpg", raw["jpg"]), (f"{key}.txt", meta["caption"].encode()),
                        (f"{key}.json", json.dumps(top).encode())]
        write_tar(out / shard.name, members)
        (out / f"{shard.stem}_stats.json").write_text(json.dumps({"count": 24, "successes": 24}))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("img2dataset")
    return {"run": tiny_checkpoint(root / "run"), "shards": img2dataset_shards(root / "shards"), "root": root}


def zeroshot_report(setup: dict[str, Path], name: str, data: Path, *extra: str) -> dict:
    """`clipline zeroshot --label-field category` on `data` with `extra` flags: the report it wrote."""
    out = setup["root"] / f"{name}.json"
    run_ok(["zeroshot", "--checkpoint", str(setup["run"]), "--data", str(data), "--out", str(out),
            "--label-field", "category", "--num-workers", "0", *extra])
    return json.loads(out.read_text())


def test_zeroshot_reads_a_top_level_label_as_the_fixture_reads_labels(setup: dict[str, Path]) -> None:
    pinned = ("--precision", "fp32", "--templates", "generic")
    top = zeroshot_report(setup, "zs_top", setup["shards"], *pinned)
    # no class list in img2dataset shards: the sorted set of the values found
    present = sorted({json.loads(raw["json"])["labels"]["category"]
                      for shard in sorted(FIXTURE_SHARDS.glob("*.tar"))
                      for raw in iter_tar_samples(str(shard), lambda *_: None)})
    assert top["n"] == 48 and list(top["per_class"]) == present and len(present) == 8
    classes = setup["root"] / "present.txt"
    classes.write_text("\n".join(present))
    nested = zeroshot_report(setup, "zs_nested", FIXTURE_SHARDS, *pinned, "--classes", str(classes))
    assert nested["n"] == 48
    for metric in ("top1", "top5", "mean_per_class_recall"):
        assert top[metric] == pytest.approx(nested[metric]), metric


def test_zeroshot_maps_string_labels_through_a_class_file(setup: dict[str, Path]) -> None:
    classes = setup["root"] / "classes.txt"
    names = json.loads((FIXTURE_SHARDS / "dataset.json").read_text())["label_fields"]["category"]
    classes.write_text("\n".join(reversed(names)) + "\n")
    report = zeroshot_report(setup, "zs_classes", setup["shards"], "--classes", str(classes))
    assert report["n"] == 48 and list(report["per_class"]) == list(reversed(names))


def test_linear_probe_and_fusion_train_on_the_top_level_label(setup: dict[str, Path]) -> None:
    probe, fusion = setup["root"] / "probe", setup["root"] / "fusion"
    shared = ["--checkpoint", str(setup["run"]), "--train-data", str(setup["shards"]), "--eval-data",
              str(setup["shards"]), "--label-field", "category"]
    run_ok(["finetune", "linear-probe", *shared, "--out", str(probe), "--feature-cache", str(setup["root"] / "cache"),
            "--shots", "2"])
    report = json.loads((probe / "report.json").read_text())
    assert report["result"]["n"] > 0 and "Smileys & Emotion" in report["result"]["per_class"]
    run_ok(["finetune", "fusion", *shared, "--out", str(fusion), "--epochs", "1", "--val-fraction", "0"])
    fused = json.loads((fusion / "report.json").read_text())
    assert "category" in json.dumps(fused) and "Smileys & Emotion" in json.dumps(fused)
