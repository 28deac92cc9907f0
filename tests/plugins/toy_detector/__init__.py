# SPDX-License-Identifier: Apache-2.0
"""A toy detection method as a medkd plugin (entry point ``toy_detector = toy_detector``), living outside ``medkd/``.

Importing it registers, with no edit to medkd:

- the network ``toy_centernet`` under task ``detection`` (:mod:`toy_detector.net`; it meets the detection contract
  of :mod:`medkd.nets.contracts`);
- the method ``toy`` (kind ``detection``): config :class:`~toy_detector.config.ToyDetectorConfig`, ``train`` on
  medkd's engine, a run predictor, ``medkd toy train`` and its bundle spec (parts imported on first use);
- the bundle spec ``toy`` (:mod:`toy_detector.bundle`), whose ``component_modules`` allowlist the inferer;
- the app view ``toy_detection`` of kind ``detection`` (:mod:`toy_detector.view`, imported when the app draws it;
  registering imports neither Streamlit nor the view), which the method names as its ``app_view``.
"""

from __future__ import annotations

from typing import Any

from medkd.app.views import register_view
from medkd.methods import Method, register_method
from medkd.nets import register_net

__all__ = ["TOY", "TOY_VIEW", "toy_centernet"]


@register_net("toy_centernet", task="detection")
def toy_centernet(in_channels: int = 1, num_classes: int = 1, **kwargs: Any) -> Any:
    """:class:`toy_detector.net.ToyCenterNet` (keywords: ``width``, ``dilations``, ``score_threshold``, ...)."""
    from toy_detector.net import ToyCenterNet

    return ToyCenterNet(in_channels=in_channels, num_classes=num_classes, **kwargs)


TOY = register_method(Method(
    name="toy",
    kind="detection",
    config_class="toy_detector.config:ToyDetectorConfig",
    train="toy_detector.train:train_toy",
    load_predictor="toy_detector.train:load_run_predictor",
    cli="toy_detector.cli:add_parser",
    bundle_spec="toy_detector.bundle:TOY_BUNDLE_SPEC",
    app_view="toy_detection",
    description="toy CenterNet-like detector on synthetic bright boxes (a test plugin)",
))

TOY_VIEW = register_view("detection", "toy_detector.view:render", name="toy_detection", inputs=("image2d", "volume"),
                         title="Detections")

import toy_detector.bundle  # noqa: F401  - registers the bundle spec (its component_modules feed the trust check)
