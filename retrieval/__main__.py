"""`python -m retrieval {embed,index,search,serve,eval} ...` is `clipline embed|index|search|serve|eval ...`.

The one exemption from the layering rule: this file forwards to the command
layer above the package (clipline.commands), which owns every command line.
"""

from clipline.cli import main

if __name__ == "__main__":
    main()
