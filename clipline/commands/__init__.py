"""Every command's thin entry point: parse the command's typed config, call one library function, print.

`clipline WORD ...` (clipline/cli.py) and `python -m PACKAGE ...` both reach the
`main(argv)` of these modules; the library below never sees flags.
"""
