# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher: source-free adaptation of a lesion detector (Ashraf et al., arXiv 2504.15404).

A detector trained on a source site adapts to unlabelled images of a target site without the source images: the
source model's offline pseudo-labels (stage P), a frozen expert's boxes (stage E: segment-anything or a CSV of
e.g. BiomedParse boxes), a mean teacher (stage A) and, for two or more classes, the relational context module
(class-confusion matrices, semantic augmentation, semantic-aware loss). Spec: ``shared/specs/grounded_teacher.md``.

Importing the package registers the method ``gt`` (:data:`GT`) without importing torch.

Example:
    >>> import medkd.methods.grounded_teacher as gt
    >>> gt.GT.name, gt.GT.kind
    ('gt', 'detection')
"""

from __future__ import annotations

from medkd.methods.grounded_teacher.method import GT

__all__ = ["GT"]
