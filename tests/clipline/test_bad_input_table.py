"""Every command, walked through the bad inputs a user can give: one `error:` line, a non-zero exit, no traceback,
nothing left behind.

Cases: a damaged checkpoint (garbage config.json, truncated model.safetensors, config.json without model_name,
an interrupted save's temporary dir) in every command that loads one, a truncated train_state.pt on --resume,
an output path of the wrong kind, --max-samples 0, an index factory too big for the data, a decompression bomb,
and an interrupted `data build`.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from clipline.cli import main
from pretrain import checkpoint
from tests.clipline.running import run_clipline
from tests.finetune.fusion_fakes import tiny_checkpoint

FINETUNE_METHODS = ("linear-probe", "clip-adapter", "tip-adapter", "tip-adapter-f", "wise-ft", "fusion")


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side x side pixels (a few hundred bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def damaged(run: Path, dest: Path, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(checkpoint.find_latest(run), dest)
    damage(dest)
    return dest


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def without_model_name(ckpt: Path) -> None:
    info = json.loads((ckpt / "config.json").read_text())
    del info["model_name"]
    (ckpt / "config.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, emoji_shards: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    shards = Path(shutil.copytree(emoji_shards, root / "shards"))
    run = tiny_checkpoint(root / "run")
    w = {"root": root, "shards": shards, "run": run, "file": root / "a_file", "dir": root / "a_dir",
         "bomb": bomb_png(root / "bomb.png")}
    w["file"].write_text("not a directory\n")
    photos = root / "photos"
    photos.mkdir()
    for i, colour in enumerate(("red", "navy")):
        Image.new("RGB", (32, 32), colour).save(photos / f"{colour}.png")
        (photos / f"{colour}.txt").write_text(f"a {colour} square {i}")
    w["photos"] = photos
    w["dir"].mkdir()
    w["bad_config"] = damaged(run, root / "bad_config", lambda c: (c / "config.json").write_text("{not json"))
    w["truncated_weights"] = damaged(run, root / "truncated_weights", lambda c: truncate(c / "model.safetensors"))
    w["no_model_name"] = damaged(run, root / "no_model_name", without_model_name)
    w["unfinished"] = damaged(run, root / "run" / "checkpoints" / ".step_00000009.tmp-1-ab12", lambda c: None)
    resume = root / "resume_run"
    damaged(run, resume / "checkpoints" / "step_00000003", lambda c: (c / "train_state.pt").write_bytes(b"PK\x03\x04"))
    w["resume_run"] = resume
    main(["embed", "--checkpoint", str(run), "--data", str(shards), "--out", str(root / "emb"), "--num-workers", "0"])
    main(["index", "build", str(root / "emb"), "--out", str(root / "index")])
    w["emb"], w["index"] = root / "emb", root / "index"
    incomplete = Path(shutil.copytree(emoji_shards, root / "killed_build"))
    (incomplete / "dataset.json").unlink()
    shutil.copy(incomplete / "00001.tar", incomplete / "00002.tar.tmp")
    (incomplete / "00001.tar").unlink()
    w["killed_build"] = incomplete
    return w


def checkpoint_commands(w: dict[str, Path], ckpt: str) -> dict[str, list[str]]:
    out = str(w["root"] / "out" / "x")
    data = str(w["shards"])
    commands = {
        "zeroshot": ["zeroshot", "--checkpoint", ckpt, "--data", data, "--out", out + ".json"],
        "eval retrieval": ["eval", "retrieval", "--checkpoint", ckpt, "--data", data, "--out", out + ".json"],
        "embed": ["embed", "--checkpoint", ckpt, "--data", data, "--out", out],
        "search": ["search", str(w["index"]), "--text", "cat", "--checkpoint", ckpt],
        "serve": ["serve", str(w["index"]), "--checkpoint", ckpt, "--port", "0"],
        "explain": ["explain", "--checkpoint", ckpt, "--data", data, "--out", out],
        "compress": ["compress", "--checkpoint", ckpt, "--data", data, "--out", out],
        "distill teacher": [*pretrain_argv(w), "--out", out, f"distill.teacher={ckpt}"],
    }
    for method in FINETUNE_METHODS:
        commands[f"finetune {method}"] = [*finetune_argv(w, method, ckpt), "--out", out]
    return commands


CHECKPOINT_DAMAGE = ("bad_config", "truncated_weights", "no_model_name", "unfinished")


def pretrain_argv(w: dict[str, Path]) -> list[str]:
    return ["pretrain", "--config", "tiny-debug", "--train-data", str(w["shards"])]


def finetune_argv(w: dict[str, Path], method: str, ckpt: str) -> list[str]:
    data = str(w["shards"])
    return ["finetune", method, "--checkpoint", ckpt, "--train-data", data, "--eval-data", data]


def wrong_kind_outputs(w: dict[str, Path]) -> dict[str, list[str]]:
    file, directory, data, run = str(w["file"]), str(w["dir"]), str(w["shards"]), str(w["run"])
    return {
        "data build --out FILE": ["data", "build", f"folder:{w['photos']}", "--out", file, "--workers", "0"],
        "pretrain --out FILE": [*pretrain_argv(w), "--out", file],
        "finetune --out FILE": [*finetune_argv(w, "linear-probe", run), "--out", file],
        "embed --out FILE": ["embed", "--checkpoint", run, "--data", data, "--out", file],
        "inspect --grid DIR": ["data", "inspect", data, "--grid", directory],
        "validate --out DIR": ["data", "validate", data, "--out", directory],
        "search --grid DIR": ["search", str(w["index"]), "--text", "cat", "--grid", directory],
        "zeroshot --out DIR": ["zeroshot", "--checkpoint", run, "--data", data, "--out", directory],
        "eval retrieval --out DIR": ["eval", "retrieval", "--checkpoint", run, "--data", data, "--out", directory],
    }


def other_cases(w: dict[str, Path]) -> dict[str, list[str]]:
    with_run = checkpoint_commands(w, str(w["run"]))
    resume = [*pretrain_argv(w), "--out", str(w["resume_run"]), "--resume", "latest"]
    ivf_on_48 = ["index", "build", str(w["emb"]), "--out", str(w["root"] / "out" / "y"), "--factory", "IVF4096,Flat"]
    return {
        "resume from a truncated train_state.pt": resume,
        "zeroshot --max-samples 0": [*with_run["zeroshot"], "--max-samples", "0"],
        "eval retrieval --max-samples 0": [*with_run["eval retrieval"], "--max-samples", "0"],
        "index build --factory IVF4096,Flat on 48 vectors": ivf_on_48,
        "search --image a decompression bomb": ["search", str(w["index"]), "--image", str(w["bomb"])],
        "validate a killed build": ["data", "validate", str(w["killed_build"])],
        "inspect a killed build": ["data", "inspect", str(w["killed_build"])],
    }


def all_cases(w: dict[str, Path]) -> dict[str, list[str]]:
    cases = {f"{name} <- {damage}": argv for damage in CHECKPOINT_DAMAGE
             for name, argv in checkpoint_commands(w, str(w[damage])).items()}
    return cases | wrong_kind_outputs(w) | other_cases(w)


class _AnyPath(dict):
    """A stand-in world for naming the cases at collection time: every path is `.`."""

    def __missing__(self, key: str) -> Path:
        return Path()


CASE_IDS = list(all_cases(_AnyPath()))


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".tmp" in p.name and "killed_build" not in str(p) and ".step_00000009" not in str(p))


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_error_line(world: dict[str, Path], case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = all_cases(world)[case]
    expected = 1 if case.endswith("a killed build") else 2  # validate and inspect say "incomplete build", exit 1
    capsys.readouterr()
    before = leftovers(world["root"])
    code, out, err = run_clipline(argv, capsys)  # any exception but SystemExit is a traceback a user would see
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == expected, err
    assert "Traceback" not in err
    if expected == 2:
        assert lines and lines[-1].startswith("error: ") and sum(x.startswith("error:") for x in lines) == 1, err
    else:
        assert "incomplete build" in out + err
    assert leftovers(world["root"]) == before
    assert not (world["root"] / "out").exists(), sorted(map(str, (world["root"] / "out").rglob("*")))
    assert world["file"].read_text() == "not a directory\n"
    assert world["dir"].is_dir() and not any(world["dir"].iterdir())

