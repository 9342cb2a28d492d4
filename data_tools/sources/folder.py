"""The `folder:PATH` source, in one of two layouts (chosen automatically).

- captions: every image has a sidecar `NAME.txt` next to `NAME.jpg` holding its caption.
  Chosen when any image has a sidecar; images without one are skipped (empty_caption).
- classes: `PATH/<class>/**/image.jpg`; the caption comes from the class name with
  templates, the label is the class (index = position in sorted class names).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data_tools.errors import DataError
from data_tools.records import SourceData, SourceRecord

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SIDECAR_SUFFIXES = {".txt", ".json"}
CLASS_TEMPLATES = ("a photo of a {}", "{}", "a picture of a {}", "an image of a {}")


def class_captions(class_name: str) -> tuple[str, ...]:
    words = class_name.replace("_", " ").replace("-", " ").strip()
    return tuple(t.format(words) for t in CLASS_TEMPLATES)


def _list_files(root: Path) -> tuple[list[Path], Counter]:
    """Image files in sorted relative-path order, and other files counted as skipped."""
    images, skipped = [], Counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # .DS_Store, .git, editor droppings
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(path)
        elif suffix not in SIDECAR_SUFFIXES:
            skipped["unsupported_file"] += 1
    return images, skipped


def _read_sidecar(image: Path) -> tuple[str, ...]:
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return ()
    text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
    return (text,) if text else ()


def load_folder(root: Path, name: str) -> SourceData:
    if not root.is_dir():
        raise DataError(f"folder {root} does not exist or is not a directory; give folder:PATH to a directory of images")
    images, skipped = _list_files(root)
    if not images:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    sidecar_layout = any(p.with_suffix(".txt").is_file() for p in images)
    classes = sorted({p.relative_to(root).parts[0] for p in images if len(p.relative_to(root).parts) > 1})
    if not sidecar_layout and not classes:
        raise DataError(f"{root} has images but neither caption files (NAME.txt next to NAME.jpg) nor class "
                        "subfolders; add one or the other")
    records = []
    for index, image in enumerate(images):
        relative = image.relative_to(root)
        common = {"key": f"{index:09d}", "source": relative.as_posix(), "image_path": str(image)}
        if sidecar_layout:
            records.append(SourceRecord(captions=_read_sidecar(image), **common))
        elif len(relative.parts) > 1:
            label = relative.parts[0]
            records.append(SourceRecord(captions=class_captions(label), label=label, cls=classes.index(label),
                                        labels={"class": label}, **common))
        else:
            skipped["no_class_folder"] += 1  # loose file at the top of a class-per-subfolder tree
    return SourceData(name=name, records=records, classes=[] if sidecar_layout else classes,
                      label_fields={} if sidecar_layout else {"class": classes}, skipped=dict(skipped),
                      details={"layout": "captions" if sidecar_layout else "classes", "path": str(root)})
