# SPDX-License-Identifier: Apache-2.0
"""Test plugin packages for the ``medkd.plugins`` entry-point group, and :func:`plugins.dist.install_plugin`."""
