"""Stand-in for the standard library's ``pipes`` module, removed in Python 3.13 (PEP 594).

mrjob 0.7.4 (kvio's ``mr`` extra) imports ``pipes`` and uses only ``pipes.quote``, which has
always been ``shlex.quote``. kvio installs this file as a top-level module. Installed, it is
only ever found on 3.13+: on 3.11 and 3.12 the standard library comes first on ``sys.path``.
Run from a source checkout (the current directory first on ``sys.path``) it can shadow the
real module on 3.11/3.12; then it loads the standard library's ``pipes`` in its own place.
"""
import sys

if sys.version_info >= (3, 13):
    from shlex import quote

    __all__ = ["quote"]
else:  # pragma: no cover - depends on the Python version
    import importlib.machinery
    import importlib.util
    import sysconfig

    _spec = importlib.machinery.PathFinder.find_spec("pipes", [sysconfig.get_path("stdlib")])
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
