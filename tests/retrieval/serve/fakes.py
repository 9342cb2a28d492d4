"""A tiny real shard of coloured shapes and a search backend whose embeddings are exact.

The server tests need answers they can predict: the embedding of "red circle"
is the one-hot of red plus the circle bit, and so is the embedding of the
image of a red circle, computed from its pixels. So "red" must rank the red
items first, and a query by an image must return that image's key first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tarfile
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import uvicorn
from PIL import Image, ImageDraw

from clipline.commands.serve import listening_socket
from data_tools.image_ops import encode_png
from retrieval.serve.app import create_app
from retrieval.serve.config import LOOPBACK_HOSTS, ServeConfig, ServeLimits
from retrieval.serve.registry import AddedItems, ImageLocation, IndexRegistry, ServedIndex
from tests.tar_writing import write_tar

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (240, 230, 20),
          "purple": (150, 30, 200), "black": (10, 10, 10)}
SHAPES = ("square", "circle")
WORDS = (*COLORS, *SHAPES)  # one embedding dimension each
DIM = len(WORDS)


def draw(color: str, shape: str, size: int = 32) -> Image.Image:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    box = (2, 2, size - 3, size - 3)
    (pen.rectangle if shape == "square" else pen.ellipse)(box, fill=COLORS[color])
    return image


def embed_words(text: str) -> np.ndarray:
    vec = np.zeros(DIM, np.float32)
    for word in text.lower().split():
        if word in WORDS:
            vec[WORDS.index(word)] = 1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else np.full(DIM, DIM ** -0.5, np.float32)


def embed_pixels(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32)
    ink = pixels.sum(axis=2) < 600  # not white
    mean = pixels[ink].mean(axis=0) if ink.any() else np.array([255.0, 255, 255])
    color = min(COLORS, key=lambda name: np.sum((np.array(COLORS[name]) - mean) ** 2))
    shape = "square" if ink.mean() > 0.7 else "circle"  # square fills 77 %, circle 60 %
    return embed_words(f"{color} {shape}")


def write_color_shard(out_dir: Path, shapes: tuple[str, ...] = SHAPES) -> Path:
    """One tar with a PNG, caption and JSON per colour x shape; returns the shard path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    members = []
    for color in COLORS:
        for shape in shapes:
            key, caption = f"{color}_{shape}", f"a {color} {shape}"
            members += [(f"{key}.png", encode_png(draw(color, shape))), (f"{key}.txt", caption.encode()),
                        (f"{key}.json", json.dumps({"key": key, "caption": caption}).encode())]
    return write_tar(out_dir / "00000.tar", members)


@dataclasses.dataclass(eq=False)
class ColorBackend:
    """`SearchBackend` over the colour shard with exact embeddings (see module doc)."""

    modalities = ("image", "text")
    embed_dim = DIM

    shard: Path | None
    keys: list[str]
    captions: list[str]
    image_vectors: np.ndarray
    text_vectors: np.ndarray
    stored: set[str]
    add_delay_s: float = 0.0

    @classmethod
    def from_shard(cls, shard: Path, **fields: Any) -> ColorBackend:
        """The backend of `shard`'s images and captions; `fields` set the rest (add_delay_s, a subclass's own)."""
        with tarfile.open(shard) as tar:
            pngs = {info.name[:-4]: tar.extractfile(info).read() for info in tar if info.name.endswith(".png")}
        keys = list(pngs)
        captions = [f"a {key.replace('_', ' ')}" for key in keys]
        image_vectors = np.stack([embed_pixels(Image.open(io.BytesIO(png))) for png in pngs.values()])
        text_vectors = np.stack([embed_words(c) for c in captions])
        return cls(shard, keys, captions, image_vectors, text_vectors, set(keys), **fields)

    def __len__(self) -> int:
        return len(self.keys)

    def search_embedding(self, vectors: np.ndarray, k: int, modality: str) -> list[list[dict]]:
        side = self.image_vectors if modality == "image" else self.text_vectors
        scores = vectors @ side.T  # (Q, N)
        out = []
        for row in scores:
            order = np.lexsort((np.arange(len(row)), -row))[:k]  # ties broken by row: stable answers
            out.append([{"key": self.keys[i], "score": float(row[i]), "caption": self.captions[i],
                         "has_image": self.keys[i] in self.stored} for i in order])
        return out

    def search_text(self, texts: list[str], k: int, modality: str) -> list[list[dict]]:
        return self.search_embedding(np.stack([embed_words(t) for t in texts]), k, modality)

    def search_image(self, images: list[Image.Image], k: int, modality: str) -> list[list[dict]]:
        return self.search_embedding(np.stack([embed_pixels(im) for im in images]), k, modality)

    def has_key(self, key: str) -> bool:
        return key in self.keys

    def image_location(self, key: str) -> ImageLocation | None:
        if key not in self.stored or self.shard is None:
            return None
        return ImageLocation(shard=self.shard, member=f"{key}.png")

    def describe(self) -> dict:
        return {"kind": "fake-colors"}

    def with_added(self, items: AddedItems) -> ColorBackend:
        time.sleep(self.add_delay_s)  # widens the window in which queries race the swap
        return dataclasses.replace(self, keys=self.keys + items.keys, captions=self.captions + items.captions,
                                   image_vectors=np.concatenate([self.image_vectors, items.image_embeddings]),
                                   text_vectors=np.concatenate([self.text_vectors, items.text_embeddings]))


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    # the server's own socket (TCP_NODELAY: with proto 0, Nagle + delayed ACK add ~40 ms to every response)
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve_config(**settings: Any) -> ServeConfig:
    """ServeConfig as these tests use it: TestClient's Host 'testserver' and loopback allowed, the add route on."""
    defaults = {"allowed_hosts": ["testserver", *LOOPBACK_HOSTS], "allow_add": True, "limits": ServeLimits()}
    return ServeConfig(**(defaults | settings))


def colors_app(source: Path | ColorBackend, **settings: Any):
    """The search app serving `source` (a shard, read as a ColorBackend, or a backend) as the one index `colors`,
    with `serve_config(**settings)`."""
    backend = source if isinstance(source, ColorBackend) else ColorBackend.from_shard(source)
    return create_app(IndexRegistry([ServedIndex("colors", backend)]), serve_config(**settings))
