"""``tunnelws demo``, the README's main command: it must finish on its own
in seconds with exit 0, tell the whole story, and never print the password."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

CLI = [sys.executable, "-m", "tunnelws", "demo"]
# Any "user:secret@" in a URL whose secret is not the redaction marker.
LEAKED_CREDENTIALS = re.compile(r"://[^/\s:@]+:(?!\*\*\*@)[^/\s@]+@")


def test_demo_tells_the_story_and_exits_0() -> None:
    started = time.monotonic()
    result = subprocess.run(CLI, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert elapsed < 30
    # check over ws:// names the port policy and its remedy...
    assert "Diagnosis (proxy-refused: port-policy)" in output
    assert "Remedy: use wss:// on port 443" in output
    assert "Result: broken at step 'connect' (exit 7)." in output
    # ...and over wss:// every step passes.
    assert "Result: the path works (exit 0)." in output
    assert "Basic credentials accepted" in output
    # The connect session echoed both lines.
    session = output.split("== 3.", 1)[1].split("== 4.", 1)[0]
    assert session.count("hello through the corporate proxy") == 2  # command + echo
    assert "exit status 0" in session
    assert "received 'hello through pproxy'" in output
    assert "compatibility page  http://127.0.0.1:" in output
    assert not LEAKED_CREDENTIALS.search(output + result.stderr)


def test_demo_keep_leaves_the_servers_up() -> None:
    process = subprocess.Popen(
        [*CLI, "--keep"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(lines)
        assert "Ctrl-C to stop" in text, text
        page = re.search(r"compatibility page  (http://\S+)", text)
        assert page is not None
        with urllib.request.urlopen(page.group(1), timeout=10) as response:
            assert response.status == 200
            assert b"<html" in response.read().lower()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0  # Ctrl-C is the normal way to stop it
