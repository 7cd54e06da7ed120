"""Whether the ``testnet`` extra is installed, and the one line that says
how to install it when it is not.

The package ships in the same wheel as the client, so it is always
importable; what the extra adds (test certificates, a third-party proxy
peer) may be missing. The commands and the pytest plugin ask here before
they start, instead of failing half-way with a traceback.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRA_MODULES", "INSTALL_HINT", "missing_extra"]

#: The modules of the ``testnet`` extra in pyproject.toml (trustme: test
#: certificates and TLS interception; pproxy: the demo's third-party proxy).
EXTRA_MODULES: tuple[str, ...] = ("trustme", "pproxy")
INSTALL_HINT = "pip install 'tunnelws[testnet]'"


def missing_extra() -> str | None:
    """None when every module of the extra can be imported; else one line
    naming the missing modules and the command that installs them."""
    missing = [name for name in EXTRA_MODULES if not _importable(name)]
    if not missing:
        return None
    return f"the test network needs {' and '.join(missing)}: {INSTALL_HINT}"


def _importable(name: str) -> bool:
    # find_spec looks without importing (pproxy is only ever run as a process).
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
