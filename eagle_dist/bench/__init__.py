"""Benchmark sweeps that write CSV, PNG plots and a markdown summary.

Each sweep module exposes ``add_parser(subparsers)``; :mod:`.cli` registers them under
``eagle-dist bench``.
"""
