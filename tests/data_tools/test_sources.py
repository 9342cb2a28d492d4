"""Round trip of every source type: inputs -> shards -> samples read back with the loader's parser."""

from __future__ import annotations

import csv
import gzip
import json
import re
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.build import BuildConfig, build_shards
from data_tools.errors import DataError
from data_tools.loader import list_shards, read_dataset_info
from data_tools.sample_fields import ParsedSample, parse_sample
from data_tools.sources import SourceConfig, load_source
from data_tools.sources.emoji import is_val_concept
from data_tools.sources.fashion_captions import RETAIL_NAMES
from data_tools.tar_samples import iter_tar_samples
from tests.data_tools.conftest import COLOURS, drawing, image_bytes, read_samples, write_image
from tests.tar_writing import write_tar

TABLE_OPTIONS = SourceConfig(image_column="img", caption_column="text", label_column="kind")


def build_and_read(spec: str, out: Path, options: SourceConfig | None = None, **config) -> tuple[dict, list[ParsedSample]]:
    data = load_source(spec, options or SourceConfig())
    info = build_shards(data, BuildConfig(out=out, workers=1, progress=False, **config))
    assert info == read_dataset_info(out)
    return info, read_samples(out)


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for name, colour in COLOURS.items():
        for i in range(2):
            write_image(root / name / f"img{i}.jpg", colour)
    (root / "README.md").write_text("not an image")
    info, samples = build_and_read(f"folder:{root}", tmp_path / "out", image_size=16, shard_size=4)
    assert info["classes"] == ["blue", "green", "red"]
    assert info["shards"] == {"00000.tar": 4, "00001.tar": 2}
    assert info["skipped"] == {"unsupported_file": 1}
    for s in samples:
        assert s.image.size == (16, 16)
        name = s.meta["label"]
        assert info["classes"][s.label] == name
        assert s.captions[0] == f"a photo of a {name}"
        r, g, b = s.image.getpixel((8, 8))
        assert (r, g, b)[["red", "green", "blue"].index(name)] > 180  # the colour survived encoding
    assert [s.key for s in samples] == [f"{i:09d}" for i in range(6)]


def test_folder_with_caption_sidecars_and_resize_crop(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write_image(root / "a.png", (10, 10, 10), caption="  a dark wide picture \n", size=(80, 40))
    write_image(root / "sub" / "b.webp", (250, 250, 0), caption="a yellow tall picture", size=(30, 60))
    write_image(root / "c.jpg", (0, 0, 0))  # no sidecar: empty caption
    info, samples = build_and_read(f"folder:{root}", tmp_path / "out", image_size=20)
    assert info["skipped"] == {"empty_caption": 1}
    assert [(s.captions[0], s.meta["source"]) for s in samples] == [
        ("a dark wide picture", "a.png"),
        ("a yellow tall picture", "sub/b.webp"),
    ]
    assert all(s.image.size == (20, 20) for s in samples) and all(s.label == -1 for s in samples)


def _alpha_folder(tmp_path: Path, size: int = 48) -> str:
    """A folder source, `tmp_path/alpha`, of one RGBA `drawing`: a red square on transparent black."""
    root = tmp_path / "alpha"
    root.mkdir()
    drawing(size).save(root / "x.png")
    (root / "x.txt").write_text("red square")
    return f"folder:{root}"


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    _, [sample] = build_and_read(_alpha_folder(tmp_path, size=32), tmp_path / "out", image_size=32)
    assert sample.image.getpixel((1, 1)) == (255, 255, 255)
    r, g, b = sample.image.getpixel((16, 16))
    assert r > 180 and g < 40 and b < 40


def test_background_black_flattens_transparency_onto_black(tmp_path: Path) -> None:
    info, [sample] = build_and_read(_alpha_folder(tmp_path), tmp_path / "out", image_size=32, background="black")
    assert max(sample.image.getpixel((1, 1))) < 10
    assert info["build"]["background"] == "black" and info["build"]["image_format"] == "jpg"


def test_background_keep_stores_rgba_png_that_readers_flatten_onto_white(tmp_path: Path) -> None:
    info, [sample] = build_and_read(_alpha_folder(tmp_path), tmp_path / "out", image_size=32, background="keep")
    assert info["build"]["image_format"] == "png+jpg"
    assert sample.image.mode == "RGB" and sample.image.getpixel((1, 1)) == (255, 255, 255)
    [raw] = [raw for path in list_shards(tmp_path / "out") for raw in iter_tar_samples(path, pytest.fail)]
    assert "png" in raw and "jpg" not in raw
    kept = parse_sample(raw, keep_alpha=True).image
    assert kept.mode == "RGBA" and kept.size == (32, 32)  # resized from 48 px
    assert kept.getpixel((1, 1))[3] == 0 and kept.getpixel((16, 16)) == (200, 0, 0, 255)
    # premultiplied resize: the edge of the square does not turn dark from the transparent black around it
    edge = [kept.getpixel((x, 16)) for x in range(5, 12) if 0 < kept.getpixel((x, 16))[3] < 255]
    assert edge and all(r >= 190 for r, _, _, _ in edge)


def test_background_keep_stores_opaque_images_as_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    write_image(root / "x.png", (10, 200, 10), caption="green")
    build_and_read(f"folder:{root}", tmp_path / "out", image_size=16, background="keep")
    [raw] = [raw for path in list_shards(tmp_path / "out") for raw in iter_tar_samples(path, pytest.fail)]
    assert "jpg" in raw and "png" not in raw


def test_unknown_background_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="`background` must be one of white, black, keep"):
        build_and_read(_alpha_folder(tmp_path), tmp_path / "out", background="grey")


def _table_rows(tmp_path: Path) -> list[dict]:
    write_image(tmp_path / "imgs" / "r.png", COLOURS["red"])
    write_image(tmp_path / "imgs" / "g.jpg", COLOURS["green"])
    return [
        {"img": "imgs/r.png", "text": "a red thing", "kind": "warm"},
        {"img": "imgs/g.jpg", "text": "a green thing", "kind": "cool"},
        {"img": "imgs/missing.png", "text": "gone", "kind": "cool"},
        {"img": "", "text": "no path", "kind": "cool"},
        {"img": "imgs/r.png", "text": "   ", "kind": "warm"},
    ]


def _check_table(info: dict, samples: list[ParsedSample]) -> None:
    assert info["skipped"] == {"missing_image": 2, "empty_caption": 1}
    assert [s.captions[0] for s in samples] == ["a red thing", "a green thing"]
    assert info["classes"] == ["cool", "warm"] and [s.label for s in samples] == [1, 0]
    assert info["label_fields"] == {"kind": ["cool", "warm"]} and samples[0].meta["labels"] == {"kind": "warm"}


def test_csv(tmp_path: Path) -> None:
    rows = _table_rows(tmp_path)
    with (tmp_path / "pairs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["img", "text", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    _check_table(*build_and_read(f"csv:{tmp_path / 'pairs.csv'}", tmp_path / "out", TABLE_OPTIONS))


def test_jsonl_with_caption_lists_and_a_bad_line(tmp_path: Path) -> None:
    rows = _table_rows(tmp_path)
    rows[0]["text"] = ["a red thing", "red"]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    info, samples = build_and_read(f"jsonl:{tmp_path / 'pairs.jsonl'}", tmp_path / "out", TABLE_OPTIONS)
    assert info["skipped"].pop("bad_row") == 1
    _check_table(info, samples)
    assert samples[0].captions == ["a red thing", "red"]


def test_parquet_with_paths_and_bytes(tmp_path: Path) -> None:
    rows = _table_rows(tmp_path)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    _check_table(*build_and_read(f"parquet:{tmp_path / 'pairs.parquet'}", tmp_path / "out", TABLE_OPTIONS))
    blob = pa.table({"image": [image_bytes(COLOURS["blue"])], "caption": ["a blue thing"]})
    pq.write_table(blob, tmp_path / "bytes.parquet")
    info, [sample] = build_and_read(f"parquet:{tmp_path / 'bytes.parquet'}", tmp_path / "out2")
    assert sample.captions == ["a blue thing"] and sample.image.getpixel((5, 5))[2] > 180


def _write_idx(idx: Path, split: str, labels: bytes, pixels: bytes) -> Path:
    """Fashion-MNIST's gzipped IDX pair for `split` ("train" or "t10k") in `idx`: 28 x 28 images and their labels."""
    idx.mkdir(exist_ok=True)
    n = len(labels)
    for kind, shape, payload in (("images-idx3", (n, 28, 28), pixels), ("labels-idx1", (n,), labels)):
        header = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
        with gzip.open(idx / f"{split}-{kind}-ubyte.gz", "wb") as handle:
            handle.write(header + payload)
    return idx


def test_fashion_mnist_from_synthetic_idx(tmp_path: Path) -> None:
    pixels = b"".join(bytes([value] * 28 * 28) for value in (0, 128, 255))
    idx = _write_idx(tmp_path / "idx", "t10k", bytes([0, 9, 4]), pixels)
    info, samples = build_and_read("fashion-mnist", tmp_path / "out", SourceConfig(split="test", path=idx), image_size=32)
    assert info["classes"][9] == "Ankle boot" and len(info["classes"]) == 10
    assert [s.label for s in samples] == [0, 9, 4]
    assert [s.meta["label"] for s in samples] == ["T-shirt/top", "Ankle boot", "Coat"]
    assert samples[0].captions[0] == "a photo of a t-shirt or top"
    assert samples[1].captions[0] == "a photo of an ankle boot"
    assert [s.image.getpixel((16, 16))[0] for s in samples] == pytest.approx([0, 128, 255], abs=3)
    assert samples[1].image.mode == "RGB" and samples[1].image.size == (32, 32)


def test_fashion_mnist_retail_captions_never_name_the_class(tmp_path: Path) -> None:
    # ink levels 60 / 120 / 250: Fashion-MNIST negates intensities, so bright ink was dark cloth
    pixels = b"".join(bytes([0] * 400 + [value] * 384) for value in [60] * 10 + [120] * 10 + [250] * 10)
    options = SourceConfig(path=_write_idx(tmp_path / "idx", "train", bytes(range(10)) * 3, pixels), captions="retail")
    info, samples = build_and_read("fashion-mnist", tmp_path / "out", options, image_size=32)
    assert info["build"]["captions"] == "retail" and [s.label for s in samples] == list(range(10)) * 3
    label_words = {"t-shirt", "top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle", "boot"}
    for sample in samples:
        assert len(sample.captions) == 3
        for caption in sample.captions:
            assert not label_words & set(caption.replace(",", " ").split()), caption
            assert sample.meta["label"] not in caption
            names = RETAIL_NAMES[sample.meta["label"]]
            assert any(name in caption for name in names), caption
    shades = [{w for c in s.captions for w in c.replace(",", " ").split()} & {"light", "grey", "dark"} for s in samples]
    for shade, expected in zip(shades, ["light"] * 10 + ["grey"] * 10 + ["dark"] * 10):
        assert shade <= {expected}  # some templates leave the tone out
    assert sum(bool(shade) for shade in shades) >= 20
    # seeded by the sample key: a rebuild writes the same captions
    _, again = build_and_read("fashion-mnist", tmp_path / "again", options, image_size=32)
    assert [s.captions for s in again] == [s.captions for s in samples]
    assert len({c for s in samples for c in s.captions}) > 30  # not one caption per class


def test_captions_option_is_for_fashion_mnist_and_emoji_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="`captions` applies to emoji and fashion-mnist only"):
        load_source(f"folder:{tmp_path}", SourceConfig(captions="retail"))
    with pytest.raises(DataError, match=re.escape("`captions` must be one of class | retail")):
        load_source("fashion-mnist", SourceConfig(captions="web"))


def _fake_emoji_cache(cache: Path, monkeypatch: pytest.MonkeyPatch, entries: list[dict], vendors: list[str]) -> None:
    """Each vendor's `npm pack emoji-datasource-VENDOR@16.0.0` output, faked, in the cache CLIPLINE_CACHE now names."""
    npm = cache / "npm"
    npm.mkdir(parents=True, exist_ok=True)
    for vendor in vendors:
        images = [(f"package/img/{vendor}/64/{entry['image']}",
                   image_bytes((i * 60, 0, 200), size=(64, 64), mode="RGBA")) for i, entry in enumerate(entries)]
        write_tar(npm / f"emoji-datasource-{vendor}-16.0.0.tgz", [("package/emoji.json", json.dumps(entries).encode()),
                                                                   *images], mode="w:gz")
    monkeypatch.setenv("CLIPLINE_CACHE", str(cache))


def test_emoji_source_offline_from_cached_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        {"name": f"THING {i}", "unified": f"1F{0x600 + i * 17:X}", "image": f"1f{0x600 + i * 17:x}.png", "short_names": [f"thing_{i}", f"t-{i}"],
         "category": ["Smileys & Emotion", "Objects"][i % 2], "subcategory": f"sub{i % 3}", "sort_order": i,
         "has_img_google": True, "has_img_twitter": i != 3}
        for i in range(6)
    ]
    _fake_emoji_cache(tmp_path / "cache", monkeypatch, entries, ["google", "twitter"])
    info, samples = build_and_read("emoji", tmp_path / "all")
    assert info["num_samples"] == 11 and info["skipped"] == {"no_vendor_image": 1}
    assert info["classes"] == ["Objects", "Smileys & Emotion"]
    assert info["label_fields"]["subcategory"] == ["sub0", "sub1", "sub2"]
    first = samples[0]
    assert first.key == "google_1f600" and samples[1].key == "twitter_1f600"
    assert first.captions == ["thing 0", "an emoji of thing 0", "thing 0 emoji", "thing 0, t 0"]
    assert first.meta["labels"] == {"category": "Smileys & Emotion", "subcategory": "sub0"} and first.label == 1
    assert first.image.getpixel((0, 0)) == pytest.approx((0, 0, 200), abs=4)

    val_concepts = {e["unified"].lower() for e in entries if is_val_concept(e["unified"], 0.5)}
    split = SourceConfig(split="val", val_fraction=0.5)
    _, val = build_and_read("emoji", tmp_path / "val", split)
    _, train = build_and_read("emoji", tmp_path / "train", SourceConfig(split="train", val_fraction=0.5))
    assert {s.meta["unified"] for s in val} == val_concepts and val_concepts
    assert not {s.meta["unified"] for s in train} & val_concepts
    assert len(train) + len(val) == 11
    _, by_vendor = build_and_read("emoji", tmp_path / "vendor", SourceConfig(split="val", split_by="vendor"))
    assert {s.meta["vendor"] for s in by_vendor} == {"twitter"} and len(by_vendor) == 5


def test_emoji_vendors_and_rich_captions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        {"name": f"THING {i}", "unified": f"1F{0x600 + i:X}", "image": f"1f{0x600 + i:x}.png", "short_names": [f"thing_{i}"],
         "category": "Animals & Nature", "subcategory": "animal-mammal", "sort_order": i,
         "has_img_google": True, "has_img_twitter": True, "has_img_apple": i != 1}
        for i in range(3)
    ]
    _fake_emoji_cache(tmp_path / "cache", monkeypatch, entries, ["google", "twitter", "apple"])
    options = SourceConfig(vendors="google,apple", captions="rich")
    info, samples = build_and_read("emoji", tmp_path / "two", options)
    assert [s.key for s in samples] == ["google_1f600", "apple_1f600", "google_1f601", "google_1f602", "apple_1f602"]
    assert info["build"]["packages"] == ["emoji-datasource-google@16.0.0", "emoji-datasource-apple@16.0.0"]
    assert samples[0].meta["concept"] == samples[1].meta["concept"] == "1f600"
    captions = samples[0].captions
    assert captions[0] == "thing 0"  # the plain name stays first: the .txt that retrieval eval reads
    assert "thing 0, an emoji from the animals & nature category" in captions
    assert "animal mammal emoji: thing 0" in captions and len(captions) == 9  # short name = name: once
    _, plain = build_and_read("emoji", tmp_path / "plain")
    assert len(plain) == 6 and len(plain[0].captions) == 3
    with pytest.raises(DataError, match="`vendors` must name some of"):
        load_source("emoji", SourceConfig(vendors="google,openxyz"))
    with pytest.raises(DataError, match="`vendors` applies to emoji only"):
        load_source("fashion-mnist", SourceConfig(vendors="google"))
    with pytest.raises(DataError, match="emoji `captions` must be one of names, rich"):
        load_source("emoji", SourceConfig(captions="retail"))
