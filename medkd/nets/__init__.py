# SPDX-License-Identifier: Apache-2.0
"""Segmentation networks by registry name: the BCP reference networks and MONAI networks.

Importing this package registers every built-in network; MONAI itself is imported only when a ``monai_*`` network
is built.

Example:
    >>> from medkd.nets import create_net, list_nets
    >>> net = create_net("bcp_unet2d", in_channels=1, out_channels=4)
    >>> list_nets("bcp_unet2d*")
    ['bcp_unet2d', 'bcp_unet2d_half']
"""

from __future__ import annotations

from medkd.nets.factory import NETS, count_parameters, create_net, list_nets, register_net
from medkd.nets.monai_nets import monai_basicunet, monai_unet, monai_vnet
from medkd.nets.unet2d import BCPUNet2d, bcp_unet2d, bcp_unet2d_half
from medkd.nets.vnet import BCPVNet, VNetNorm, bcp_vnet, bcp_vnet_small

__all__ = [
    "NETS",
    "register_net",
    "create_net",
    "list_nets",
    "count_parameters",
    "BCPUNet2d",
    "bcp_unet2d",
    "bcp_unet2d_half",
    "BCPVNet",
    "VNetNorm",
    "bcp_vnet",
    "bcp_vnet_small",
    "monai_basicunet",
    "monai_unet",
    "monai_vnet",
]
