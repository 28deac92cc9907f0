# SPDX-License-Identifier: Apache-2.0
"""``medkd app``: start the Streamlit app (research use only)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``app``."""
    app = sub.add_parser("app", help="open the viewer: load a study, run a bundle, look, download (Streamlit)")
    app.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    app.add_argument("--address", default="localhost",
                     help="address to listen on (default localhost; 0.0.0.0 serves the network, with no login)")
    app.add_argument("--models", default=None, help="folder of bundles and zoo.yaml (sets $MEDKD_MODELS)")
    app.add_argument("--headless", action="store_true",
                     help="no browser tab and no first-run prompt (automatic when stdin or stdout is not a terminal: "
                          "nohup, a service manager, a container)")
    app.add_argument("--trust-bundle", action="store_true",
                     help="let the app run code in bundle configs ($ expressions, _target_ outside medkd's "
                          "allowlist; sets $MEDKD_TRUST_BUNDLES=1); only for bundles you trust")
    app.set_defaults(handler=_app, interrupt_hint="the app stopped")


def _app(args: argparse.Namespace) -> int:
    from medkd import api

    return api.app(port=args.port, address=args.address, models=args.models, headless=args.headless,
                   trust_bundle=args.trust_bundle)
