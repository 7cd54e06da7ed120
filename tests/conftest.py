"""Shared fixtures. System components (squid, chromium, namespaces) skip with a
reason on a laptop without them, but fail when CI=true."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Node `ws` for tests that run it, from the adapter's lockfile.
NODE_MODULES = Path(__file__).resolve().parent.parent / "proxy/adapters/node_ws/node_modules"


def require_binary(name: str) -> str:
    """Return the path of a system binary, or skip (fail under CI=true)."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"{name} is not installed (run `make test` as root to install it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_node_ws() -> str:
    """Return the path of node, with the adapter's `ws` package installed
    (`make test` runs npm ci in proxy/adapters/node_ws), or skip (fail
    under CI=true). Scripts load `ws` from WS_MODULES_DIR=NODE_MODULES."""
    node = require_binary("node")
    if not (NODE_MODULES / "ws").is_dir():
        message = "Node `ws` is not installed: run `make test` (npm ci in proxy/adapters/node_ws)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


@pytest.fixture(scope="session")
def test_ca():  # type: ignore[no-untyped-def]
    """A trustme CA whose server certificate covers the loopback names."""
    from tunnelws_testnet.origin import make_test_ca

    return make_test_ca()


@pytest.fixture
async def origin(nursery, test_ca):  # type: ignore[no-untyped-def]
    """The origin test server on loopback, ws:// and wss://."""
    from tunnelws_testnet.origin import OriginConfig, serve_origin

    config = OriginConfig(tls_port=0, ssl_context=test_ca.server_context())
    return await nursery.start(serve_origin, config)
