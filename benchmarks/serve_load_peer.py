"""clip-retrieval's back end (its Flask `KnnService`) serving one of our indices, for serve_load.py.

    /tmp/crvenv/bin/python benchmarks/serve_load_peer.py NAME INDEX_DIR PORT

Run with the python of a throwaway venv where `clip-retrieval` is installed
(it pins old versions, so never into .venv). clip-retrieval loads models by
name through `all_clip` (which downloads weights); instead this builds its
`ClipResource` from our checkpoint's open_clip model, tokenizer and
preprocess, our FAISS index and our metadata parquet, then serves the same
routes its `clip_back` serves, with Flask's threaded server as `clip_back`
runs it, on 127.0.0.1 only. Its package `__init__` imports the whole tool
chain (wandb, img2dataset...), so the `clip_back` module is imported alone.

A venv that runs it without downloading a second torch (clip_back's own
imports are light; torch, open_clip and faiss come from ours through a .pth):

    python3.11 -m venv /tmp/crvenv
    /tmp/crvenv/bin/pip install --no-deps clip-retrieval
    /tmp/crvenv/bin/pip install flask "flask_cors>=4,<5" flask_restful prometheus-client "fire<0.6" h5py
    echo $PWD/.venv/lib/python3.11/site-packages > /tmp/crvenv/lib/python3.11/site-packages/zz_clipline.pth
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import signal
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def import_clip_back() -> types.ModuleType:
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None:
        raise SystemExit("clip-retrieval is not installed in this python")
    package = types.ModuleType("clip_retrieval")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["clip_retrieval"] = package
    import clip_retrieval.clip_back as clip_back

    return clip_back


def fastest_metadata_provider(clip_back: types.ModuleType, folder: Path, columns: list[str], count: int):
    """clip_back's metadata provider (parquet, hdf5 or arrow) that answers 10-id lookups fastest here."""
    import random
    import time

    from clip_retrieval.clip_back_prepro.parquet_to_arrow import parquet_to_arrow

    parquet_to_arrow(str(folder / "metadata"), str(folder / "arrow"), columns)
    providers = {
        "parquet": clip_back.ParquetMetadataProvider(str(folder / "metadata")),
        "hdf5": clip_back.load_metadata_provider(str(folder), True, False, None, columns, False)[0],
        "arrow": clip_back.ArrowMetadataProvider(str(folder / "arrow")),
    }
    rng = random.Random(0)
    lookups = [[rng.randrange(count) for _ in range(10)] for _ in range(200)]
    seconds = {}
    for name, provider in providers.items():
        start = time.perf_counter()
        for ids in lookups:
            provider.get(ids, columns)
        seconds[name] = time.perf_counter() - start
    best = min(seconds, key=seconds.get)
    print(f"peer: metadata lookup ms per query {({k: round(v * 5, 2) for k, v in seconds.items()})}: using {best}",
          file=sys.stderr, flush=True)
    return providers[best]


def main() -> None:
    name, index_dir, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # serve_load.py stops it so: unwind, remove the temp dir
    with tempfile.TemporaryDirectory(prefix="clip-back-") as folder:
        serve(name, index_dir, port, Path(folder))


def serve(name: str, index_dir: Path, port: int, folder: Path) -> None:
    """clip_back's routes for the index in `index_dir`, its metadata cache kept in `folder`, until stopped."""
    import faiss
    from flask import Flask
    from flask_restful import Api

    from pretrain.encoder import Encoder
    from retrieval.recorded_paths import recorded_checkpoint

    clip_back = import_clip_back()
    info = json.loads((index_dir / "info.json").read_text())
    encoder = Encoder.load(recorded_checkpoint(info["checkpoint"], index_dir))  # recorded relative to the index
    # clip_back expects INDEX/image.index and INDEX/metadata/*.parquet; it writes metadata.hdf5 next to them.
    (folder / "metadata").symlink_to((index_dir / "metadata").resolve())
    indices = {}
    for modality in ("image", "text"):
        path = index_dir / f"{modality}.faiss"
        if path.exists():
            index = faiss.read_index(str(path))
            params = json.loads((index_dir / "summary.json").read_text())[modality].get("params") or {}
            if params:  # the tuned search setting, as our server uses it
                setting = params if isinstance(params, str) else ",".join(f"{k}={v}" for k, v in params.items())
                faiss.ParameterSpace().set_index_parameters(index, setting)
            with contextlib.suppress(RuntimeError):  # not an IVF index
                faiss.extract_index_ivf(index).make_direct_map()  # clip_back uses search_and_reconstruct
            indices[modality] = index
    columns = ["key", "caption"]
    metadata = fastest_metadata_provider(clip_back, folder, columns, indices["image"].ntotal)
    resource = clip_back.ClipResource(
        device="cpu", model=encoder.model, preprocess=encoder.preprocess, tokenizer=encoder.tokenizer,
        model_txt_mclip=None, safety_model=None, violence_detector=None, metadata_provider=metadata,
        image_index=indices.get("image"), text_index=indices.get("text"), ivf_old_to_new_mapping=None,
        columns_to_return=columns, metadata_is_ordered_by_ivf=False, aesthetic_embeddings=None,
    )
    app = Flask(__name__)
    api = Api(app)
    api.add_resource(clip_back.IndicesList, "/indices-list", resource_class_kwargs={"indices": [name]})
    api.add_resource(clip_back.KnnService, "/knn-service", resource_class_kwargs={"clip_resources": {name: resource}})
    api.add_resource(clip_back.MetadataService, "/metadata", resource_class_kwargs={"clip_resources": {name: resource}})
    app.run(host="127.0.0.1", port=port, debug=False, threaded=True)


if __name__ == "__main__":
    main()
