# SPDX-License-Identifier: Apache-2.0
"""Networks by registry name and task: the BCP reference networks and MONAI networks
(segmentation), ``retinanet2d`` (detection: MONAI's RetinaNet, loaded on first use), and ``kd_cnn``,
``kd_cnn_wide`` and MONAI's ResNets (classification, the distillation benchmark's students and teachers).

Each network is registered under a :class:`NetTask` (segmentation, detection, classification, video_encoder) whose
contract :mod:`medkd.nets.contracts` checks. Importing this package registers every built-in network; MONAI
itself is imported only when a ``monai_*`` network is built.

Example:
    >>> from medkd.nets import create_net, list_nets
    >>> net = create_net("bcp_unet2d", in_channels=1, out_channels=4)
    >>> list_nets("bcp_unet2d*")
    ['bcp_unet2d', 'bcp_unet2d_half']
"""

from __future__ import annotations

from medkd.nets import retinanet as retinanet  # registers retinanet2d (task detection); MONAI loads lazily
from medkd.nets import token_vit as token_vit  # registers salt_vit (classification), salt_frames (video_encoder)
from medkd.nets.classifiers import KDCNN, kd_cnn, kd_cnn_wide, monai_resnet10, monai_resnet18
from medkd.nets.factory import NETS, NetTask, count_parameters, create_net, list_nets, net_task, register_net
from medkd.nets.monai_nets import monai_basicunet, monai_unet, monai_vnet
from medkd.nets.unet2d import BCPUNet2d, bcp_unet2d, bcp_unet2d_half
from medkd.nets.vnet import BCPVNet, VNetNorm, bcp_vnet, bcp_vnet_small

__all__ = [
    "NETS",
    "BCPUNet2d",
    "BCPVNet",
    "KDCNN",
    "NetTask",
    "VNetNorm",
    "bcp_unet2d",
    "bcp_unet2d_half",
    "bcp_vnet",
    "bcp_vnet_small",
    "count_parameters",
    "create_net",
    "kd_cnn",
    "kd_cnn_wide",
    "list_nets",
    "monai_basicunet",
    "monai_resnet10",
    "monai_resnet18",
    "monai_unet",
    "monai_vnet",
    "net_task",
    "register_net",
]
