"""What a fusion head looked at: gate values (gated) and attention weights (cross-attention).

For one (image, caption) pair:
- gated: the per-dimension gate g (1 = image, 0 = text) and its mean, the image's share;
- attention: for each image patch, the attention mass it puts on the caption's
  word tokens (a (gh, gw) map), and the pooled image query's weights over the
  caption tokens (which words it read);
- every head: each task's prediction with both modalities, image only and text only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from evaluate.heatmap import overlay, pick_samples, to_pil
from evaluate.plots import save_png
from data_tools.atomic_write import write_json_atomic
from finetune.fusion.model import FusionClassifier
from finetune.fusion.store import load_fusion
from finetune.fusion.train import CONDITIONS, condition_mask
from pretrain.vision_tower import vision_tower


def token_strings(tokenizer: Callable, ids: Sequence[int]) -> list[str]:
    """Readable token strings for an open_clip (SimpleTokenizer) or Hugging Face tokenizer."""
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "convert_ids_to_tokens"):
        return [str(t) for t in hf.convert_ids_to_tokens([int(i) for i in ids])]
    if hasattr(tokenizer, "decode"):
        return [tokenizer.decode([int(i)]).strip() for i in ids]
    return [str(int(i)) for i in ids]


@torch.no_grad()
def explain_pair(model: FusionClassifier, tokenizer: Callable, image: Tensor, caption: str) -> dict[str, Any]:
    """Predictions per condition, gate values or attention maps for one preprocessed image (3, H, W)."""
    model.eval()
    ids = tokenizer([caption])  # (1, L)
    encoded = model.encode(image[None], ids)
    result: dict[str, Any] = {"caption": caption, "predictions": {}}
    for condition in CONDITIONS:
        image_present, text_present = condition_mask(1, condition)
        out = model.classify(encoded, image_present, text_present)
        result["predictions"][condition] = {
            task: {"class": model.classes[task][int(p.argmax())], "probability": float(p.max())}
            for task, p in ((t, logits[0].softmax(-1)) for t, logits in out["logits"].items())
        }
        if condition == "both" and "gate" in out:
            result["gate"] = out["gate"][0]  # (d,)
            result["gate_mean"] = float(out["gate"][0].mean())
        if condition == "both" and "attention" in out:
            result |= _attention_summary(model, out["attention"][0], encoded["text_mask"][0], ids[0], tokenizer)
    return result


def _attention_summary(model: FusionClassifier, weights: Tensor, text_mask: Tensor, ids: Tensor,
                       tokenizer: Callable) -> dict[str, Any]:
    """weights (1+P, 1+L): queries = [pooled image, patches], keys = [pooled text, tokens]."""
    gh, gw = vision_tower(model.towers).grid_size
    real = torch.cat([torch.zeros(1, dtype=torch.bool), text_mask])  # word keys only, not the pooled text
    patch_to_words = weights[1:, real].sum(dim=1).reshape(gh, gw)  # (gh, gw)
    words = token_strings(tokenizer, ids[text_mask].tolist())
    keys = torch.cat([torch.ones(1, dtype=torch.bool), text_mask])  # pooled text + word keys
    return {"patch_attention_to_words": patch_to_words,
            "word_attention": list(zip(["<caption>", *words], weights[0, keys].tolist()))}


def explanation_png(image: Image.Image, explanation: dict[str, Any], path: Path, *, scale: int = 4) -> Path:
    """Image, the head's evidence (gate histogram or patch attention overlay + word weights), predictions."""
    fig = Figure(figsize=(12, 3.4))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    axes[0].imshow(big)
    axes[0].set_axis_off()
    axes[0].set_title(explanation["caption"][:50], fontsize=8)
    if "gate" in explanation:
        axes[1].hist(explanation["gate"].numpy(), bins=20, range=(0, 1), color="#3b75af")
        axes[1].axvline(explanation["gate_mean"], color="#d62728", linestyle="--",
                        label=f"mean {explanation['gate_mean']:.2f} (image share)")
        axes[1].set_xlabel("gate per dimension (1 = image, 0 = text)")
        axes[1].legend(fontsize=8)
    elif "patch_attention_to_words" in explanation:
        axes[1].imshow(overlay(image, explanation["patch_attention_to_words"]).resize(big.size, Image.NEAREST))
        axes[1].set_axis_off()
        axes[1].set_title("patch attention to caption words", fontsize=8)
    else:
        axes[1].set_axis_off()
    _predictions_panel(axes[2], explanation)
    return save_png(fig, path, dpi=100)


def _predictions_panel(ax: Any, explanation: dict[str, Any]) -> None:
    lines = []
    for condition, tasks in explanation["predictions"].items():
        lines.append(condition.replace("_", " ") + ":")
        lines += [f"  {task}: {p['class']} ({p['probability']:.0%})" for task, p in tasks.items()]
    if "word_attention" in explanation:
        top = sorted(explanation["word_attention"], key=lambda item: -item[1])[:5]
        lines.append("image query reads: " + ", ".join(f"{w} {a:.2f}" for w, a in top))
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace")
    ax.set_axis_off()


def explain_samples(run: str, data: str, out: Path, *, count: int = 8) -> list[dict[str, Any]]:
    """`explanation_png` for `count` samples spread through `data` with a saved fusion run; a JSON summary.

    Writes `out/fusion_<i>.png` and `out/fusion_explanations.json` (predictions, gate mean, top words).
    """
    model, encoder = load_fusion(run)
    batch = pick_samples(encoder, data, count, spread=True)
    preprocess = encoder.config["preprocess"]
    summary = []
    for i, (image, caption) in enumerate(zip(batch["image"], batch["caption"])):
        explanation = explain_pair(model, encoder.tokenizer, image, caption)
        explanation_png(to_pil(image, preprocess["mean"], preprocess["std"]), explanation, out / f"fusion_{i}.png")
        entry = {"key": batch["key"][i], "caption": caption, "predictions": explanation["predictions"]}
        summary.append(entry | {k: explanation[k] for k in ("gate_mean", "word_attention") if k in explanation})
    write_json_atomic(out / "fusion_explanations.json", {"run": run, "samples": summary})
    return summary
