# SPDX-License-Identifier: Apache-2.0
"""``medkd app`` starts a Streamlit server that answers its health check, with the models folder it was given."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

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
