# SPDX-License-Identifier: Apache-2.0
"""``medkd app`` starts a Streamlit server that answers its health check, with the models folder it was given."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from medkd.cli import build_parser


def test_app_flags_parse():
    args = build_parser().parse_args(["app", "--port", "9000", "--address", "0.0.0.0", "--models", "m", "--headless"])
    assert (args.port, args.address, args.models, args.headless) == (9000, "0.0.0.0", "m", True)


def test_trust_bundle_flag_reaches_the_app_process(monkeypatch):
    from medkd import api
    from medkd.app.session import TRUST_ENV
    from medkd.cli import main

    assert build_parser().parse_args(["app"]).trust_bundle is False
    assert build_parser().parse_args(["app", "--trust-bundle"]).trust_bundle is True
    servers = []

    class FakeServer:  # records what the Streamlit process would get, starts nothing
        def __init__(self, command, env):
            servers.append((command, env))

        def wait(self):
            return 0

        def terminate(self):
            pass

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    monkeypatch.setenv(TRUST_ENV, "1")  # inherited from the shell: only the flag trusts
    assert main(["app", "--headless", "--port", "9001"]) == 0
    assert TRUST_ENV not in servers[-1][1] and "9001" in servers[-1][0]
    assert main(["app", "--trust-bundle", "--headless"]) == 0
    assert servers[-1][1][TRUST_ENV] == "1"
    assert api.app(trust_bundle=True) == 0 and servers[-1][1][TRUST_ENV] == "1"
    assert api.app() == 0 and TRUST_ENV not in servers[-1][1]


class _Stream:
    """A stand-in for sys.stdin/sys.stdout that is, or is not, a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _headless_flag(command: list[str]) -> str:
    return command[command.index("--server.headless") + 1]


@pytest.mark.parametrize(
    ("stdin_tty", "stdout_tty", "flag", "expected"),
    [
        (True, True, [], "false"),  # a terminal: Streamlit may open a tab
        (True, True, ["--headless"], "true"),
        (False, True, [], "true"),  # nohup / systemd: stdin is /dev/null, no one answers the e-mail prompt
        (True, False, [], "true"),  # output to a log file
        (False, False, [], "true"),
    ],
)
def test_app_is_headless_without_a_terminal(stdin_tty, stdout_tty, flag, expected, monkeypatch):
    from medkd.cli import main

    commands = []

    class FakeServer:
        def __init__(self, command, env):
            commands.append(command)

        def wait(self):
            return 0

        def terminate(self):
            pass

    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    monkeypatch.setattr(sys, "stdin", _Stream(stdin_tty))
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_tty))
    assert main(["app", *flag]) == 0
    assert _headless_flag(commands[-1]) == expected


def test_closed_or_missing_stdin_counts_as_no_terminal(monkeypatch):
    from medkd import api

    commands = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, env: commands.append(command) or _Done())
    monkeypatch.setattr(sys, "stdout", _Stream(True))
    monkeypatch.setattr(sys, "stdin", None)  # pythonw, some service managers
    assert api.app() == 0 and _headless_flag(commands[-1]) == "true"
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    monkeypatch.setattr(sys, "stdin", closed)
    assert api.app() == 0 and _headless_flag(commands[-1]) == "true"


class _Done:
    def wait(self):
        return 0

    def terminate(self):
        pass


def test_medkd_app_serves(models_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "medkd", "app", "--port", str(port), "--address", "127.0.0.1", "--headless",
               "--models", str(models_dir)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"))
    try:
        deadline, body = time.time() + 90, b""
        while time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read().strip()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b"ok"
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert "research use only" in out
