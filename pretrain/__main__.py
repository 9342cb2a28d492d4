"""`python -m pretrain ...` is `clipline pretrain ...` (also under torchrun / accelerate launch).

The one exemption from the layering rule: this file forwards to the command
layer above the package (clipline.commands), which owns every command line.
"""

from clipline.commands.pretrain import main

if __name__ == "__main__":
    main()
