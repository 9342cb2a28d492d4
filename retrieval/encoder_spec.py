"""Turn a `--checkpoint` value into an `Encoder`.

    RUN or CHECKPOINT dir         -> Encoder.load (newest checkpoint of a run)
    open_clip:MODEL[:WEIGHTS]     -> Encoder.from_open_clip (built-in or registered
                                     config; WEIGHTS a local .pt file or a tag)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retrieval.errors import RetrievalError

if TYPE_CHECKING:
    from pretrain.encoder import Encoder

OPEN_CLIP_PREFIX = "open_clip:"


def load_encoder(spec: str, device: str = "cpu") -> Encoder:
    """The encoder named by `spec`; RetrievalError with the reason when it cannot be loaded."""
    from pretrain.encoder import Encoder  # deferred: torch + open_clip take seconds to import
    from pretrain.errors import PretrainError

    try:
        if spec.startswith(OPEN_CLIP_PREFIX):
            name, _, weights = spec[len(OPEN_CLIP_PREFIX):].partition(":")
            return Encoder.from_open_clip(name, pretrained=weights or None, device=device)
        return Encoder.load(spec, device=device)
    except PretrainError as err:
        raise RetrievalError(f"cannot load checkpoint {spec!r}: {err}") from err
    except RuntimeError as err:  # open_clip: unknown model name
        raise RetrievalError(f"cannot load checkpoint {spec!r}: {str(err).splitlines()[0]}") from err
