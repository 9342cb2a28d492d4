"""`clipline embed --checkpoint RUN --data DIR --out EMB` (also `python -m retrieval embed ...`).

Progress goes to stderr so that the JSON summary on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from clipline.commands.errors import reported_errors
from clipline.commands.model_choice import ModelChoiceConfig, encoder_spec
from clipline.flags import ConfigParser, config_from_args
from retrieval.embed import EmbedConfig


@dataclass(kw_only=True)
class EmbedCommandConfig:
    """Embed every sample of a shard dir: img_emb/, text_emb/, metadata/ parts (one per shard, resumable) and
    info.json."""

    encoder: ModelChoiceConfig = field(default_factory=ModelChoiceConfig)
    """The model: --checkpoint RUN, or --model NAME [--pretrained FILE]."""
    embed: EmbedConfig
    """What to embed into where (its checkpoint comes from the model choice)."""


def main(argv: list[str] | None = None) -> None:
    from retrieval.embed import embed_shards

    with reported_errors("embed"):
        parser = ConfigParser("clipline embed", EmbedCommandConfig.__doc__)
        parser.add_config(EmbedCommandConfig, flat=("encoder", "embed", "embed.distributed"), skip=("embed.checkpoint",))
        args = parser.parse(argv)
        spec = encoder_spec(config_from_args(ModelChoiceConfig, args, prefix="encoder"))
        command = config_from_args(EmbedCommandConfig, args, given={"embed.checkpoint": spec})
        info = embed_shards(command.embed, log=lambda line: print(line, file=sys.stderr, flush=True))
    if info:
        print(json.dumps(info))
