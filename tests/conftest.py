"""Shared fixtures. System components (squid, chromium, namespaces) skip with a
reason on a laptop without them, but fail when CI=true."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Node `ws` for tests that run it, from the adapter's lockfile.
NODE_MODULES = Path(__file__).resolve().parent.parent / "proxy/adapters/node_ws/node_modules"


def skip_or_fail(message: str) -> NoReturn:
    """A missing system component: skip the test, or fail it under CI=true."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str) -> str:
    """Return the path of a system binary, or skip (fail under CI=true)."""
    from tunnelws_testnet.peers import find_binary

    path = find_binary(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (run `make test` as root to install it)")
    return path


def require_node_ws() -> str:
    """Return the path of node, with the adapter's `ws` package installed
    (`make test` runs npm ci in proxy/adapters/node_ws), or skip (fail
    under CI=true). Scripts load `ws` from WS_MODULES_DIR=NODE_MODULES."""
    node = require_binary("node")
    if not (NODE_MODULES / "ws").is_dir():
        skip_or_fail(
            "Node `ws` is not installed: run `make test` (npm ci in proxy/adapters/node_ws)"
        )
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
