# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR: forecasting future surgical events from endoscopic video by state-change learning (Sharma et al.,
arXiv 2510.12904; spec ``shared/specs/surgfutr.md``).

Clips are compressed into states (Sinkhorn-Knopp over K prototypes); a teacher that sees the current and a future
clip teaches a causal student (with ActDyn) to predict the coming state change; SFPBench heads on the student give,
every analysed second, the tools/triplets and events of the next seconds, the time to the next phase and the
remaining surgery duration. Importing the package registers the method ``surgfutr`` without importing torch.

Example:
    >>> import medkd.methods.surgfutr as sf
    >>> sf.SURGFUTR.name, sf.SURGFUTR.kind
    ('surgfutr', 'forecasting')
"""

from __future__ import annotations

from medkd.methods.surgfutr.method import SURGFUTR

__all__ = ["SURGFUTR"]
