"""`python -m finetune ...` is `clipline finetune ...`.

The one exemption from the layering rule: this file forwards to the command
layer above the package (clipline.commands), which owns every command line.
"""

from clipline.commands.finetune import main

if __name__ == "__main__":
    main()
