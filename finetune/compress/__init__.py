"""Compressed variants of a checkpoint's towers (bf16, int8, magnitude pruning) and the table comparing them.

`variants` makes each variant; `table.compression_table` is what `clipline compress` calls.
"""
