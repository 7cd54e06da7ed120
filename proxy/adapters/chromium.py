"""Harness adapter: headless Debian chromium, driven by playwright.

Proxy: chromium is configured with its own command-line flags, the way its
network-settings documentation tells a user, from the scenario's variables
picked the way chromium's Linux environment reader picks them (``http_proxy``
serves ``ws://``, ``https_proxy`` serves ``wss://``, ``all_proxy`` only when
neither is set; each ``no_proxy`` entry bypasses the name and its
subdomains):

- an ``http://``/``https://`` proxy: ``--proxy-server`` and
  ``--proxy-bypass-list`` (through playwright's ``proxy`` option, which writes
  exactly those flags and answers the proxy's credential challenges as a
  user would in the browser's dialog);
- a SOCKS proxy: ``--proxy-server=socks5://HOST:PORT`` (chromium resolves
  names through a SOCKS5 proxy and has no SOCKS authentication);
- a PAC file (``pac+file://``, ``pac+http://`` in the variables):
  ``--proxy-pac-url`` with the file's URL; ``pac+wpad:``:
  ``--proxy-auto-detect`` (WPAD).

Every one of these is a translation, and the adapter says so on stderr.
Chromium never takes credentials from the proxy URL (a desktop user types
them into a dialog; headless there is none); Negotiate it answers itself from
the Kerberos ticket cache (``KRB5CCNAME``).

Trust: chromium ignores ``SSL_CERT_FILE``; on Linux it trusts the NSS database
in ``$HOME/.pki/nssdb``. The adapter runs chromium with a temporary ``HOME``
whose NSS database holds the scenario's CA (imported with ``certutil`` from
Debian's libnss3-tools), exactly as a corporate CA is installed for a user.
Certificate errors are never ignored.

The page is ``about:blank``; a script opens the WebSocket, sends, and returns
the echo; the browser console (which carries chromium's ``net::ERR_...``
reason) is copied to stderr on failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from _contract import Contract, echoed, fail, read_contract, translated
from playwright.async_api import ProxySettings, async_playwright

NAME = "chromium"
CHROMIUM = os.environ.get("TUNNELWS_CHROMIUM", "/usr/bin/chromium")

# Each echo is logged to the console with this prefix and printed at once,
# so a failure after the first echo still shows it, as with the other adapters.
ECHO_PREFIX = "tunnelws-echo:"

SCRIPT = """
async ([url, message, rounds, idleMs, ECHO]) => {
  const ws = new WebSocket(url);
  let wake = null;
  const failure = new Promise((_, reject) => {
    ws.onerror = () => reject(new Error("WebSocket error"));
    ws.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
  });
  ws.onmessage = (e) => {
    console.log(ECHO + e.data);
    if (wake) wake();
  };
  await Promise.race([new Promise((r) => { ws.onopen = r; }), failure]);
  for (let i = 0; i < rounds; i++) {
    // Idle while listening: a lost connection ends the wait at once.
    if (i) await Promise.race([new Promise((r) => setTimeout(r, idleMs)), failure]);
    const got = new Promise((r) => { wake = r; });
    ws.send(message);
    await Promise.race([got, failure]);
  }
  ws.onclose = null;
  ws.close(1000);
}
"""


def _env(*names: str) -> str:
    for name in names:
        value = os.environ.get(name.lower()) or os.environ.get(name.upper())
        if value:
            return value
    return ""


def _proxy_for(url: str) -> tuple[str, str]:
    """(variable, proxy) as chromium's environment reader would pick it for ``url``."""
    scheme_variable = "https_proxy" if urlsplit(url).scheme == "wss" else "http_proxy"
    for variable in (scheme_variable, "all_proxy"):
        if _env(variable):
            return variable, _env(variable)
    return "", ""


def _bypass_list() -> str:
    rules: list[str] = []
    for entry in _env("no_proxy").replace(",", " ").split():
        name = entry.lstrip("*").lstrip(".")
        rules += [entry] if entry == "*" or "/" in entry else [name, f"*.{name}"]
    return ";".join(rules)


def _trust_store(home: Path) -> None:
    """Install the scenario's CA bundle into chromium's NSS database."""
    bundle = os.environ.get("SSL_CERT_FILE")
    if not bundle:
        return
    certutil = shutil.which("certutil")
    if certutil is None:
        fail(NAME, "certutil is missing (apt-get install libnss3-tools): cannot install the CA")
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True)
    subprocess.run([certutil, "-d", f"sql:{database}", "-N", "--empty-password"], check=True)
    pems = Path(bundle).read_text().split("-----END CERTIFICATE-----")
    for index, pem in enumerate(p for p in pems if "BEGIN CERTIFICATE" in p):
        certificate = home / f"ca{index}.pem"
        certificate.write_text(pem + "-----END CERTIFICATE-----\n")
        subprocess.run(
            [
                certutil,
                "-d",
                f"sql:{database}",
                "-A",
                "-t",
                "C,,",
                "-n",
                f"ca{index}",
                "-i",
                str(certificate),
            ],
            check=True,
        )


@dataclass
class ProxyFlags:
    """How chromium is told about the proxy: playwright's ``proxy`` option
    (``--proxy-server``/``--proxy-bypass-list`` plus its credential answers)
    and/or flags of its own."""

    proxy: ProxySettings | None = None
    args: list[str] = field(default_factory=list)


def proxy_flags(url: str) -> ProxyFlags:
    """Chromium's own proxy configuration for the scenario's variables."""
    variable, proxy = _proxy_for(url)
    if not proxy:
        return ProxyFlags()
    if proxy.startswith("pac+wpad:"):
        translated(NAME, f"{variable} (pac+wpad) -> --proxy-auto-detect")
        return ProxyFlags(args=["--proxy-auto-detect"])
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    bypass = _bypass_list()
    shown = f"{variable} ({parts.scheme})"
    if parts.scheme.startswith("pac+"):
        translated(NAME, f"{shown} -> --proxy-pac-url")
        return ProxyFlags(args=[f"--proxy-pac-url={proxy.removeprefix('pac+')}"])
    if parts.scheme.startswith("socks"):
        # socks5h:// is socks5:// to chromium, which always lets the proxy
        # resolve names; it sends no SOCKS credentials.
        server = f"socks5://{parts.hostname}:{parts.port or 1080}"
        translated(NAME, f"{shown} -> --proxy-server=socks5://…")
        return ProxyFlags(proxy={"server": server, "bypass": bypass})
    server = f"{parts.scheme}://{parts.hostname}:{parts.port}" if parts.port else proxy
    settings: ProxySettings = {"server": server, "bypass": bypass}
    if parts.username is not None:
        # Chromium takes no credentials on its command line; playwright
        # answers the proxy's challenge as a user would in the browser dialog.
        settings["username"] = unquote(parts.username)
        settings["password"] = unquote(parts.password or "")
    translated(
        NAME, f"{shown} -> --proxy-server" + (", no_proxy -> --proxy-bypass-list" if bypass else "")
    )
    return ProxyFlags(proxy=settings)


def _console(text: str, console: list[str]) -> None:
    if text.startswith(ECHO_PREFIX):
        echoed(text.removeprefix(ECHO_PREFIX))
    else:
        console.append(text)


async def run(contract: Contract, home: Path, console: list[str]) -> None:
    flags = proxy_flags(contract.url)
    args = [
        "--no-sandbox",  # root in a container has no user namespace sandbox
        # Keep chromium's own background traffic (updates, sign-in) quiet.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        *flags.args,
    ]
    async with async_playwright() as playwright:
        # playwright turns ``proxy`` into --proxy-server/--proxy-bypass-list.
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=args,
            proxy=flags.proxy,
            env={**os.environ, "HOME": str(home)},
        )
        try:
            page = await browser.new_page()
            page.on("console", lambda message: _console(message.text, console))
            await page.evaluate(
                SCRIPT,
                [
                    contract.url,
                    contract.message,
                    contract.rounds,
                    contract.idle * 1000,
                    ECHO_PREFIX,
                ],
            )
        finally:
            await browser.close()


async def main() -> None:
    contract = read_contract(NAME)
    if urlsplit(contract.url).scheme not in ("ws", "wss"):
        fail(NAME, f"not a WebSocket URL: {contract.url}")
    console: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tunnelws-chromium-") as home:
        _trust_store(Path(home))
        try:
            await asyncio.wait_for(run(contract, Path(home), console), contract.deadline)
        except Exception as error:
            # The page only sees "error"; chromium's reason is on the console.
            fail(NAME, "; ".join([*console, str(error).splitlines()[0]]))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as error:  # the library's own error is the result
        fail(NAME, error)
