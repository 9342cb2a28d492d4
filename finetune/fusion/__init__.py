"""Fusion classifiers: image + text -> one or more label fields (concat, cross-attention, gated heads).

`train_fusion` (run.py) is the entry point `clipline finetune fusion` calls;
`load_fusion` (store.py) reads a trained run back.
"""
