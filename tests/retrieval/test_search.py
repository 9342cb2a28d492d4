"""Retriever and `clipline search` on the embedded emoji fixture: same answers as exact search in numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipline.cli import main
from retrieval.embedding_store import EmbeddingSet
from retrieval.recorded_paths import recorded_path
from retrieval.result_grid import CELL, PLACEHOLDER, save_result_grid
from retrieval.retriever import Retriever
from retrieval.shard_members import read_image


@pytest.fixture(scope="module")
def retriever(emoji_index: Path, encoder) -> Retriever:
    return Retriever(emoji_index, encoder=encoder)


def test_text_query_ranks_like_exact_search(retriever: Retriever, emoji_emb: Path, encoder) -> None:
    images = np.concatenate(list(EmbeddingSet(emoji_emb).batches("image")))
    query = encoder.encode_text(["banana"]).numpy()
    expected = np.argsort(-(images @ query[0]))[:5]
    results = retriever.search_text(["banana"], k=5)[0]
    assert [r["id"] for r in results] == expected.tolist()
    assert [r["score"] for r in results] == pytest.approx((images @ query[0])[expected].tolist(), abs=1e-5)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    first = results[0]
    assert Path(first["shard"]).is_file() and first["image"] == f"{first['shard']}#{first['member']}"


@pytest.mark.parametrize("k", [1, 7, 48])
def test_search_fields_gives_search_embeddings_hits_in_one_lookup(retriever: Retriever, encoder, k: int) -> None:
    queries = encoder.encode_text(["banana", "a red heart", "monkey", "flag of japan"]).numpy()  # (4, D)
    full = retriever.search_embedding(queries, k=k)
    fields = retriever.search_fields(queries, k, ("key", "member"))
    assert [[(h["score"], h["key"], h["member"]) for h in row] for row in full] == \
        [[(h["score"], h["key"], h["member"]) for h in row] for row in fields]
    assert all(set(h) == {"score", "key", "member"} for row in fields for h in row)
    assert len({row[0]["key"] for row in fields}) > 1  # the rows are the queries' own


def test_image_query_finds_itself_and_its_caption(emoji_index: Path, retriever: Retriever, encoder) -> None:
    top = retriever.search_text(["monkey"], k=1)[0][0]
    picture = read_image(top["shard"], top["offset"], top["size"], top["member"])
    assert retriever.search_image([picture], k=1)[0][0]["key"] == top["key"]  # image -> image
    over_text = Retriever(emoji_index, modality="text", encoder=encoder)
    image_vector = retriever.index.reconstruct(top["id"])[None]
    emb_dir = recorded_path(retriever.loaded.info["emb_dir"], emoji_index)
    texts = np.concatenate(list(EmbeddingSet(emb_dir).batches("text")))
    expected = int(np.argmax(texts @ image_vector[0]))
    assert over_text.search_embedding(image_vector, k=1)[0][0]["id"] == expected  # image -> text


def test_search_cli_json_and_grid(emoji_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                  retriever: Retriever) -> None:
    grid = tmp_path / "grid.png"
    main(["search", str(emoji_index), "--text", "red apple", "-k", "7", "--json", "--grid", str(grid)])
    output = json.loads(capsys.readouterr().out)
    assert output["query"] == {"text": "red apple"} and output["modality"] == "image"
    assert [r["key"] for r in output["results"]] == [r["key"] for r in retriever.search_text(["red apple"], 7)[0]]
    assert {"score", "key", "caption", "shard", "member", "image"} <= set(output["results"][0])
    with Image.open(grid) as sheet:
        assert sheet.size == (5 * 128, 24 + 2 * (128 + 30))  # 7 results in rows of 5, with a title


def test_search_cli_plain_output(emoji_index: Path, capsys: pytest.CaptureFixture) -> None:
    main(["search", str(emoji_index), "--text", "flag", "-k", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[0] == "1"


def test_grid_draws_a_placeholder_for_a_missing_image(tmp_path: Path) -> None:
    results = [{"rank": 1, "score": 0.5, "caption": "gone", "shard": str(tmp_path / "moved.tar"), "member": "a.jpg",
                "offset": 512, "size": 100}]
    with Image.open(save_result_grid(results, tmp_path / "g.png")) as sheet:
        assert sheet.size == (CELL, CELL + 30)
        assert sheet.getpixel((CELL // 2, CELL // 2)) == PLACEHOLDER
