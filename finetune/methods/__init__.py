"""Few-shot methods on a frozen representation: linear probe, CLIP-Adapter, Tip-Adapter(-F), WiSE-FT, full fine-tune.

`experiment.METHODS` names them; `run.run_finetune` and `sweep.run_sweep` are
what `clipline finetune METHOD | sweep` call; `adapter_io` saves and loads a
fitted adapter.
"""
