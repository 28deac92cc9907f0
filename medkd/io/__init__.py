# SPDX-License-Identifier: Apache-2.0
"""Reading and writing medical volumes: NIfTI, MHA/NRRD and DICOM series in, NIfTI masks out."""

from __future__ import annotations

from medkd.io.volume_io import (
    VOLUME_SUFFIXES,
    Volume,
    list_inputs,
    output_name,
    read_volume,
    strip_suffix,
    write_mask_like,
)

__all__ = ["VOLUME_SUFFIXES", "Volume", "list_inputs", "output_name", "read_volume", "strip_suffix", "write_mask_like"]
