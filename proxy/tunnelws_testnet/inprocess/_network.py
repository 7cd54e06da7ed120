"""Start a scenario's network inside the current trio run: origin, companion
proxy and firewall, with the environment a client of that network is given."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import trio

from ..companion import ProxyConfig, RunningProxy, serve_proxy
from ..origin import LocalCA, OriginAddresses, OriginConfig, make_test_ca, serve_origin
from ._firewall import Firewall, Observations, network_side
from ._scenarios import ORIGIN_HOST, PROXY_PASSWORD, PROXY_USER, SCENARIOS, Scenario

__all__ = ["PROXY_VARIABLES", "CorporateNetwork", "client_environment", "open_network"]

#: Every variable a client might take a proxy from; a network's environment
#: unsets all of them except its own (so the host's settings never leak in).
PROXY_VARIABLES: tuple[str, ...] = tuple(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ws_proxy", "wss_proxy",
                 "socks_proxy")
    for name in (base, base.upper())
)  # fmt: skip

LOOPBACK = "127.0.0.1"


@dataclass
class CorporateNetwork:
    """A running scenario.

    url: the origin's echo URL (``ws(s)://origin.test:PORT/echo``).
    proxy_url: what the client is told about the proxy (credentials
        included when the scenario has them), or None.
    env: the variables the client is given: proxy variables, ``no_proxy``,
        the CA bundle (``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``,
        ``NODE_EXTRA_CA_CERTS``) and ``TUNNELWS_URL``.
    ca_file: the bundle the client should trust (the origin's CA, plus the
        interception CA when the scenario installs it).
    origin, proxy: the running servers (``proxy.stats`` counts what the
        proxy saw); firewall: the client-side policy.
    """

    scenario: Scenario
    url: str
    origin: OriginAddresses
    proxy: RunningProxy | None
    proxy_url: str | None = field(repr=False)
    env: dict[str, str] = field(repr=False)
    ca: LocalCA = field(repr=False)
    ca_file: Path
    firewall: Firewall

    @property
    def observations(self) -> Observations:
        """The client's connects and lookups, as the firewall saw them."""
        return self.firewall.observations

    def url_for(self, path: str) -> str:
        """The origin URL with another path (``/info``, ``/timestamp``...)."""
        base, _, _ = self.url.rpartition("/echo")
        return base + path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting exactly :attr:`ca_file`."""
        return ssl.create_default_context(cafile=str(self.ca_file))


# Every per-scheme name a library reads for WebSocket URLs (aiohttp and Node's
# proxy-from-env read ws(s)_proxy, curl and urllib http(s)_proxy).
_SCHEME_VARIABLES: tuple[str, ...] = ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy")


def _proxy_env(scenario: Scenario, proxy_url: str) -> dict[str, str]:
    if scenario.env_style == "all":
        return {"ALL_PROXY": proxy_url}
    names = _SCHEME_VARIABLES
    if scenario.env_style == "upper":
        names = tuple(name.upper() for name in _SCHEME_VARIABLES)
    return dict.fromkeys(names, proxy_url)


def _client_proxy_url(scenario: Scenario, proxy: RunningProxy) -> str:
    userinfo = ""
    if scenario.credentials != "none":
        password = PROXY_PASSWORD if scenario.credentials == "right" else "wrong-password"
        userinfo = f"{quote(PROXY_USER, safe='')}:{quote(password, safe='')}@"
    return f"{proxy.scheme}://{userinfo}{proxy.host}:{proxy.port}"


def _proxy_config(scenario: Scenario, ca: LocalCA, directory: Path) -> ProxyConfig:
    config = replace(scenario.proxy, host=LOOPBACK, port=0)
    if scenario.https_proxy:
        config = replace(config, ssl_context=ca.server_context())
    if scenario.intercept != "none":
        config = replace(
            config,
            intercept=True,
            ca_dir=directory / "proxy-ca",
            onward_ssl_context=ca.client_context(),
        )
    return config


@asynccontextmanager
async def open_network(
    scenario: str | Scenario, *, directory: Path | None = None
) -> AsyncIterator[CorporateNetwork]:
    """Run ``scenario`` (an id from :data:`SCENARIOS` or a :class:`Scenario`)
    for the duration of the block, inside the current trio run.

    The firewall filters every trio socket and lookup of this run except the
    network's own servers; the environment is *not* applied (``network.env``
    is for you to set, the pytest fixture does it). Files (CAs) go to
    ``directory`` or a temporary directory removed at the end.
    """
    spec = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    async with AsyncExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tunnelws-")))
        ca = make_test_ca([ORIGIN_HOST], directory=directory / "origin-ca")
        client_hosts = {"localhost": LOOPBACK}
        if spec.client_dns:
            client_hosts[ORIGIN_HOST] = LOOPBACK
        firewall = Firewall(
            egress=spec.egress,
            client_hosts=client_hosts,
            network_hosts={ORIGIN_HOST: LOOPBACK},
        )
        firewall.install()
        stack.callback(firewall.uninstall)
        nursery = await stack.enter_async_context(trio.open_nursery())
        # Cancelled first on exit (the stack unwinds in reverse), so the
        # servers stop before the firewall and the files go.
        stack.callback(nursery.cancel_scope.cancel)

        config = OriginConfig(host=LOOPBACK, tls_port=0, ssl_context=ca.server_context())
        origin: OriginAddresses = await nursery.start(network_side, serve_origin, config)
        port = origin.https[1] if spec.scheme == "wss" and origin.https else origin.http[1]
        url = f"{spec.scheme}://{ORIGIN_HOST}:{port}/echo"

        ca_file = ca.ca_pem_path
        env: dict[str, str] = {}
        proxy: RunningProxy | None = None
        proxy_url: str | None = None
        if spec.proxied:
            proxy_config = _proxy_config(spec, ca, directory)
            proxy = await nursery.start(network_side, serve_proxy, proxy_config)
            firewall.allow(proxy.host, proxy.port)
            proxy_url = _client_proxy_url(spec, proxy)
            env.update(_proxy_env(spec, proxy_url))
            if spec.intercept == "trusted" and proxy.ca_path is not None:
                ca_file = directory / "trusted-bundle.pem"
                ca_file.write_bytes(ca.ca_pem + proxy.ca_path.read_bytes())
        if spec.no_proxy:
            env["no_proxy"] = spec.no_proxy
        env.update(
            dict.fromkeys(("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"),
                          str(ca_file))
        )  # fmt: skip
        env["TUNNELWS_URL"] = url
        yield CorporateNetwork(
            scenario=spec,
            url=url,
            origin=origin,
            proxy=proxy,
            proxy_url=proxy_url,
            env=env,
            ca=ca,
            ca_file=ca_file,
            firewall=firewall,
        )


def client_environment(base: Mapping[str, str], network: CorporateNetwork) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) without any proxy variable, plus the
    network's variables: the environment for a client subprocess."""
    env = {key: value for key, value in base.items() if key not in PROXY_VARIABLES}
    env.update(network.env)
    return env
