"""`python -m data_tools ...` is `clipline data ...`.

The one exemption from the layering rule: this file forwards to the command
layer above the package (clipline.commands), which owns every command line.
"""

from clipline.commands.data import main

if __name__ == "__main__":
    main()
