"""Text batches split by caption length, each part cut to its own longest caption.

Dynamic padding cuts a batch to its longest caption, but captions vary: on
the emoji shards the mean is 6 tokens and a batch's longest 15, so most
rows compute padding. A causal text tower pooled at end-of-text gives each
caption the same features at any padded length, and rows never mix, so the
batch can be sorted by length, cut into a few contiguous buckets, each
bucket trimmed to its own longest caption, and the features put back in
batch order: the same features for fewer token rows (about 0.56x the rows
of one trimmed batch with two buckets on emoji captions).

Each extra bucket costs a second pass of Python dispatch and smaller matmuls,
so a split is taken only when it saves more than `BUCKET_COST_ROWS` token rows.

Encoding many captions at once (a shard's, a class list's) goes further:
`run_length_sorted` sorts all of them by length and encodes fixed-size chunks
of neighbours, so each chunk pads only to its own longest (emoji-train shards of
1,000 captions, chunks of 256: 1.5-1.65x fewer token rows than the same chunks in
input order, each trimmed, and 4-5.7x fewer than the 32-token context).
"""

from __future__ import annotations

import torch

BUCKET_COST_ROWS = 256
"""Token rows (B x L) a split must save to pay for one more pass through the tower
(clip-tiny-64 on the 2-core machine: a text pass's dispatch is worth ~2 rows of 128 tokens)."""

BUCKET_ROW_MULTIPLE = 16
"""Rows per training bucket come in multiples of this: a batch of 128 then meets at most 8 bucket sizes x the
context's lengths as matmul shapes. With any row count, the first epoch keeps meeting new shapes, and each
costs the CPU matmul library ~1 ms and ~0.7 MB to set up (clip-tiny-64 on the 2-core machine: +1 GB and
~15k page faults per step over the first ~35 steps)."""


def caption_lengths(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Index of each row's last non-pad token + 1. (B, L) -> (B,)"""
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return ((tokens != pad_id) * positions).amax(dim=1).clamp_min(1)


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def choose_buckets(lengths: list[int], *, max_buckets: int, multiple: int = 1, row_multiple: int = 1,
                   cost_rows: int = BUCKET_COST_ROWS) -> list[int]:
    """Split points of the ascending `lengths` into at most `max_buckets` contiguous buckets that
    minimise token rows (rows x bucket's longest, rounded up to `multiple`) + cost_rows per bucket,
    every bucket but the last holding a multiple of `row_multiple` rows.

    Returns the end index of every bucket (the last is len(lengths)). Exact dynamic programme over
    the candidate ends; O(max_buckets x candidates^2), candidates <= context length (or n / row_multiple).
    """
    n = len(lengths)
    if row_multiple > 1:
        ends = [*range(row_multiple, n, row_multiple), n]
    else:  # a split inside a run of equal lengths never pays
        ends = [i + 1 for i in range(n) if i + 1 == n or lengths[i + 1] != lengths[i]]
    best: dict[tuple[int, int], tuple[int, list[int]]] = {}  # (buckets used, end) -> (cost, ends)
    for j, end in enumerate(ends):
        best[(1, j)] = (end * round_up(lengths[end - 1], multiple) + cost_rows, [end])
    for k in range(2, max_buckets + 1):
        for j, end in enumerate(ends):
            options = []
            for i in range(j):
                if (k - 1, i) not in best:  # fewer distinct lengths than buckets so far
                    continue
                cost, cut = best[(k - 1, i)]
                start = ends[i]
                options.append((cost + (end - start) * round_up(lengths[end - 1], multiple) + cost_rows,
                                [*cut, end]))
            if options:
                best[(k, j)] = min(options, key=lambda o: o[0])
    last = len(ends) - 1
    return min((best[(k, last)] for k in range(1, max_buckets + 1) if (k, last) in best), key=lambda o: o[0])[1]


def bucket_rows(tokens: torch.Tensor, pad_id: int, *, max_buckets: int, multiple: int = 1,
                row_multiple: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(row indices, their tokens trimmed to the bucket's longest) per bucket, covering every row once."""
    lengths = caption_lengths(tokens, pad_id)  # (B,)
    order = torch.argsort(lengths, stable=True)  # (B,)
    sorted_lengths = lengths[order].tolist()
    out, start = [], 0
    for end in choose_buckets(sorted_lengths, max_buckets=max_buckets, multiple=multiple, row_multiple=row_multiple):
        rows = order[start:end]
        width = min(tokens.shape[1], round_up(sorted_lengths[end - 1], multiple))
        out.append((rows, tokens[rows, :width]))  # (b,), (b, L_b)
        start = end
    return out


def run_bucketed(encode, tokens: torch.Tensor, pad_id: int, *, max_buckets: int, multiple: int = 1,
                 row_multiple: int | None = None) -> torch.Tensor:
    """`encode` (tokens (b, L_b) -> features (b, D)) over length buckets, features in batch order. (B, D)

    `row_multiple` defaults to `BUCKET_ROW_MULTIPLE`."""
    parts = bucket_rows(tokens, pad_id, max_buckets=max_buckets, multiple=multiple,
                        row_multiple=BUCKET_ROW_MULTIPLE if row_multiple is None else row_multiple)
    if len(parts) == 1:  # no split pays: the batch in its own order, trimmed
        return encode(tokens[:, :parts[0][1].shape[1]])
    return _in_input_order(torch.cat([r for r, _ in parts]), torch.cat([encode(t) for _, t in parts]))


def run_length_sorted(encode, tokens: torch.Tensor, pad_id: int, *, chunk: int) -> torch.Tensor:
    """`encode` over chunks of `chunk` captions of similar length, each trimmed to its own longest;
    features in input order. (N, L) -> (N, D)

    Exact where `encode` gives a caption the same features at any padded length (`supports_trimming`).
    """
    lengths = caption_lengths(tokens, pad_id)  # (N,)
    order = torch.argsort(lengths, stable=True)  # (N,) shortest first
    longest = lengths[order].tolist()
    features = [encode(tokens[order[start:start + chunk], :longest[min(start + chunk, len(longest)) - 1]])
                for start in range(0, len(longest), chunk)]  # each (b, D)
    return _in_input_order(order, torch.cat(features))


def _in_input_order(rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Features computed for `rows` (input positions, in computed order) put back in input order. (N, D)"""
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(rows.numel(), device=rows.device)
    return features[inverse]  # (N, D)
