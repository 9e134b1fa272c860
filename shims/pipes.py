"""Stand-in for the standard library's ``pipes`` module, removed in Python 3.13 (PEP 594).

mrjob 0.7.4 (the ``mr`` extra) imports ``pipes`` and uses only ``pipes.quote``, which has
always been ``shlex.quote``. kvio installs this file as a top-level module; on Python 3.11 and
3.12 the standard library comes first on ``sys.path``, so this file is only ever imported
where the real module no longer exists.
"""
from shlex import quote

__all__ = ["quote"]
