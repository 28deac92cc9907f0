# SPDX-License-Identifier: Apache-2.0
"""COCO-JSON lesion detection datasets (the D-MASTER releases of DDSM, INbreast, RSNA-BSD1K) and their images.

Layout (spec ``grounded_teacher.md`` §3)::

    <dataset_dir>/annotations/instances_<split>.json     # split: train, val (RSNA-BSD1K: full, val)
    <dataset_dir>/images/<split>/<file_name>             # PNG (8/16-bit), JPEG or DICOM (MG/DX/CR)

:func:`read_coco_split` checks the file field by field and returns a :class:`DetectionDataset`: boxes as float32
``(x_min, y_min, x_max, y_max)`` pixels (x = column, ``x_max = x + w``), category ids remapped to ``0..K-1`` in
ascending id order (or to the positions of ``class_names`` when given, so source and target share one mapping),
``iscrowd`` and degenerate boxes dropped with one warning that counts them, images without boxes kept (they count
in FP/image). :func:`read_image` reads one image as float32 ``(H, W)``.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "images" / "train").mkdir(parents=True); (root / "annotations").mkdir()
    >>> Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "images" / "train" / "a.png")
    >>> doc = {"images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 30}],
    ...        "annotations": [{"image_id": 7, "category_id": 5, "bbox": [2, 3, 10, 4], "iscrowd": 0}],
    ...        "categories": [{"id": 5, "name": "mass"}]}
    >>> _ = (root / "annotations" / "instances_train.json").write_text(json.dumps(doc))
    >>> ds = read_coco_split(root, "train")
    >>> ds.class_names, ds.records[0].boxes.tolist(), ds.records[0].labels.tolist()
    (('mass',), [[2.0, 3.0, 12.0, 7.0]], [0])
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkd.data.json_file import read_json_object
from medkd.errors import DataError

__all__ = [
    "BOX_TOLERANCE",
    "DetectionRecord",
    "DetectionDataset",
    "annotation_path",
    "read_coco_split",
    "read_image",
    "coco_document",
    "write_coco_split",
]

logger = logging.getLogger(__name__)

#: boxes may overhang the image by this many pixels (rounding in the releases); they are clipped. Beyond: an error.
BOX_TOLERANCE = 1.0
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})


@dataclass(frozen=True)
class DetectionRecord:
    """One image and its ground-truth boxes.

    Attributes:
        image_id: the COCO image id.
        file: the image file.
        height: rows H, from the JSON.
        width: columns W, from the JSON.
        boxes: float32 ``(N, 4)`` xyxy pixels, x = column, inside ``[0, W] x [0, H]``.
        labels: int64 ``(N,)`` class indices ``0..K-1``.
    """

    image_id: int
    file: Path
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class DetectionDataset:
    """One split of a COCO detection dataset.

    Attributes:
        name: the dataset folder's name (``ddsm``, ``inbreast``, ...).
        split: the split read (``train``, ``val``, ``full``).
        root: the dataset folder.
        class_names: class names by index ``0..K-1``.
        category_ids: the COCO category id of each class index (``-1`` for a class the file does not list).
        records: the images, in the JSON's order.
    """

    name: str
    split: str
    root: Path
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    records: tuple[DetectionRecord, ...]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        """Boxes over all images."""
        return sum(len(r.boxes) for r in self.records)


def annotation_path(dataset_dir: str | Path, split: str) -> Path:
    """``<dataset_dir>/annotations/instances_<split>.json``.

    Example:
        >>> annotation_path("data/rsna", "full").as_posix()
        'data/rsna/annotations/instances_full.json'
    """
    return Path(dataset_dir) / "annotations" / f"instances_{split}.json"


# --- reading the JSON -------------------------------------------------------------------------------------------


def _load_json(path: Path, split: str) -> dict[str, Any]:
    if not path.is_file():
        found = sorted(p.stem.removeprefix("instances_") for p in path.parent.glob("instances_*.json"))
        hint = f"splits found: {', '.join(found)}" if found else f"expected the COCO layout {path.parent.name}/"
        raise DataError(path, f"no annotation file for split {split!r} ({hint})")
    doc = read_json_object(path)
    missing = [key for key in ("images", "annotations", "categories") if key not in doc]
    if missing:
        raise DataError(path, f"missing top-level key(s) {', '.join(map(repr, missing))}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc[key], list):
            raise DataError(path, f"{key!r} must be a list, got {type(doc[key]).__name__}")
    return doc


def _field(path: Path, where: str, entry: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(entry, Mapping):
        raise DataError(path, f"{where} must be an object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(path, f"{where} lacks key {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DataError(path, f"{where}.{key} has the wrong type ({type(value).__name__}: {value!r:.40})")
    return value


def _int_field(path: Path, where: str, entry: Any, key: str, *, positive: bool = False) -> int:
    value = _field(path, where, entry, key, (int, float))
    if value != int(value) or (positive and value <= 0):
        raise DataError(path, f"{where}.{key} must be a{' positive' if positive else 'n'} integer, got {value!r}")
    return int(value)


def _categories(path: Path, doc: dict[str, Any], class_names: Sequence[str] | None) -> tuple[dict[int, int],
                                                                                              tuple[str, ...],
                                                                                              tuple[int, ...]]:
    """Map COCO category id -> class index; return the mapping, the class names and their category ids."""
    cats: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        cid = _int_field(path, f"categories[{i}]", cat, "id")
        name = _field(path, f"categories[{i}]", cat, "name", str)
        if cid in cats:
            raise DataError(path, f"categories[{i}]: duplicate category id {cid}")
        if name in cats.values():
            raise DataError(path, f"categories[{i}]: duplicate category name {name!r}")
        cats[cid] = name
    if class_names is None:
        if not cats:
            raise DataError(path, "'categories' is empty: no classes")
        ids = tuple(sorted(cats))
        return {cid: k for k, cid in enumerate(ids)}, tuple(cats[cid] for cid in ids), ids
    names = tuple(class_names)
    if len(set(names)) != len(names) or not names:
        raise DataError(path, f"class_names must be distinct and non-empty, got {list(names)}")
    unknown = sorted(name for name in cats.values() if name not in names)
    if unknown:
        raise DataError(path, f"categories {unknown} are not among the expected classes {list(names)}")
    by_name = {name: cid for cid, name in cats.items()}
    absent = [name for name in names if name not in by_name]
    if absent:
        logger.info("%s lists no category for class(es) %s", path, absent)
    mapping = {cid: names.index(name) for cid, name in cats.items()}
    return mapping, names, tuple(by_name.get(name, -1) for name in names)


def _image_file(path: Path, dataset_dir: Path, split: str, where: str, file_name: str) -> Path:
    """Resolve ``file_name`` (relative to ``images/<split>/``, or already starting with ``images/<split>/``)."""
    rel = Path(file_name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DataError(path, f"{where}.file_name {file_name!r} must be a relative path inside the dataset folder")
    images = dataset_dir / "images"
    candidates = [images / split / rel, images / rel, dataset_dir / rel]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(candidates[0], f"missing image file (listed as {where} in {path})")


def read_coco_split(
    dataset_dir: str | Path, split: str, *, class_names: Sequence[str] | None = None
) -> DetectionDataset:
    """Read one split of a COCO detection dataset (``annotations/instances_<split>.json`` + ``images/<split>/``).

    Args:
        dataset_dir: the dataset folder (``<root>/<dataset>``).
        split: ``train``, ``val``, ``full`` (RSNA-BSD1K), ...
        class_names: expected class names, index = position; the file's category names must be among them (so two
            domains share one mapping). ``None``: the file's categories in ascending id order.

    Returns:
        The :class:`DetectionDataset`; every image of the JSON (with or without boxes) is a record.

    Raises:
        DataError: naming the file, for a missing or broken JSON, a missing key or wrong type, an empty ``images``
            list, duplicate or unknown image / category ids, a box outside the image by more than
            :data:`BOX_TOLERANCE` pixels, a non-finite box, or a missing image file.

    Example:
        >>> import tempfile
        >>> read_coco_split(tempfile.mkdtemp(), "train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medkd.errors.DataError: .../annotations/instances_train.json: no annotation file for split 'train' (...)
    """
    dataset_dir = Path(dataset_dir)
    path = annotation_path(dataset_dir, split)
    doc = _load_json(path, split)
    mapping, names, category_ids = _categories(path, doc, class_names)
    if not doc["images"]:
        raise DataError(path, "'images' is empty: the split lists no images")

    images: dict[int, tuple[Path, int, int]] = {}
    for i, entry in enumerate(doc["images"]):
        where = f"images[{i}]"
        image_id = _int_field(path, where, entry, "id")
        file_name = _field(path, where, entry, "file_name", str)
        height = _int_field(path, where, entry, "height", positive=True)
        width = _int_field(path, where, entry, "width", positive=True)
        if image_id in images:
            raise DataError(path, f"{where}: duplicate image id {image_id}")
        images[image_id] = (_image_file(path, dataset_dir, split, where, file_name), height, width)

    boxes: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
    labels: dict[int, list[int]] = {image_id: [] for image_id in images}
    crowd = degenerate = clipped = 0
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        image_id = _int_field(path, where, ann, "image_id")
        category_id = _int_field(path, where, ann, "category_id")
        bbox = _field(path, where, ann, "bbox", list)
        if image_id not in images:
            raise DataError(path, f"{where}: unknown image_id {image_id}")
        if category_id not in mapping:
            raise DataError(path, f"{where}: unknown category_id {category_id} (categories: {sorted(mapping)})")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DataError(path, f"{where}.bbox must be 4 numbers [x, y, w, h], got {bbox!r:.60}")
        if not all(math.isfinite(v) for v in bbox):
            raise DataError(path, f"{where}.bbox has a non-finite value: {bbox}")
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            degenerate += 1
            continue
        file, height, width = images[image_id]
        x0, y0, x1, y1 = x, y, x + w, y + h
        tol = BOX_TOLERANCE
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise DataError(
                path,
                f"{where}: box [x, y, w, h] = {bbox} lies outside image {image_id} ({file.name}, "
                f"{width} x {height} pixels) by more than {tol:g} pixel",
            )
        box = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height)]
        clipped += box != [x0, y0, x1, y1]
        if box[2] <= box[0] or box[3] <= box[1]:
            degenerate += 1
            continue
        boxes[image_id].append(box)
        labels[image_id].append(mapping[category_id])
    if crowd or degenerate:
        logger.warning("%s: dropped %d annotation(s) (%d iscrowd, %d degenerate with w <= 0 or h <= 0)", path,
                       crowd + degenerate, crowd, degenerate)
    if clipped:
        logger.info("%s: clipped %d box(es) overhanging the image by at most %g pixel", path, clipped, BOX_TOLERANCE)

    records = tuple(
        DetectionRecord(
            image_id=image_id,
            file=file,
            height=height,
            width=width,
            boxes=np.asarray(boxes[image_id], dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels[image_id], dtype=np.int64),
        )
        for image_id, (file, height, width) in images.items()
    )
    dataset = DetectionDataset(dataset_dir.name, split, dataset_dir, names, category_ids, records)
    logger.info("read %s/%s: %d images, %d boxes, classes %s", dataset.name, split, len(records),
                dataset.num_boxes, list(names))
    return dataset


# --- writing (synthetic data, converted releases) ----------------------------------------------------------------


def coco_document(
    records: Sequence[DetectionRecord], class_names: Sequence[str], *, images_dir: str | Path | None = None
) -> dict[str, Any]:
    """The COCO JSON of ``records`` (categories numbered from 1; ``bbox`` in xywh; ``file_name`` relative to
    ``images_dir``, or the file's name when ``None``).

    Example:
        >>> rec = DetectionRecord(1, Path("a.png"), 8, 8, np.array([[1, 2, 4, 6]], np.float32), np.array([0]))
        >>> coco_document([rec], ["mass"])["annotations"][0]["bbox"]
        [1.0, 2.0, 3.0, 4.0]
    """
    images, annotations = [], []
    for rec in records:
        name = Path(rec.file).relative_to(images_dir).as_posix() if images_dir is not None else Path(rec.file).name
        images.append({"id": int(rec.image_id), "file_name": name, "height": int(rec.height), "width": int(rec.width)})
        for box, label in zip(np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4), np.asarray(rec.labels)):
            x0, y0, x1, y1 = (round(float(v), 3) for v in box)
            w, h = round(x1 - x0, 3), round(y1 - y0, 3)
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(rec.image_id), "category_id": int(label) + 1,
                "bbox": [x0, y0, w, h], "area": round(w * h, 3), "iscrowd": 0,
            })
    categories = [{"id": k + 1, "name": name, "supercategory": "lesion"} for k, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco_split(
    dataset_dir: str | Path, split: str, records: Sequence[DetectionRecord], class_names: Sequence[str]
) -> Path:
    """Write ``annotations/instances_<split>.json`` for records whose files lie in ``images/<split>/``.

    Returns:
        The JSON path.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> rec = DetectionRecord(1, d / "images/val/a.png", 8, 8, np.zeros((0, 4), np.float32), np.zeros(0, int))
        >>> write_coco_split(d, "val", [rec], ["mass"]).name
        'instances_val.json'
    """
    dataset_dir = Path(dataset_dir)
    path = annotation_path(dataset_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = coco_document(records, class_names, images_dir=dataset_dir / "images" / split)
    path.write_text(json.dumps(doc))
    return path


# --- images ------------------------------------------------------------------------------------------------------


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _to_gray(array: np.ndarray, *, rgb: bool) -> np.ndarray:
    """(H, W) as is; (H, W, 3|4) RGB(A) -> luma (ITU-R BT.601); (H, W, 2) gray + alpha -> gray."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array.astype(np.float32)
    if array.ndim == 3 and rgb and array.shape[-1] in (3, 4):
        return (array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    if array.ndim == 3 and array.shape[-1] in (1, 2):
        return array[..., 0].astype(np.float32)
    raise ValueError(f"cannot make a grayscale image of an array shaped {array.shape}")


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    from medkd.io.phi import safe_error

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise DataError(path, f"not a readable DICOM file ({type(err).__name__})") from None
    if "PixelData" not in ds:
        raise DataError(path, "DICOM file holds no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(path, f"multi-frame DICOM ({frames} frames) refused: one instance must be one 2D image")
    try:
        array = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if int(ds.get("SamplesPerPixel", 1)) > 1:
            if photometric.startswith("YBR"):
                from pydicom.pixels import convert_color_space

                array = convert_color_space(array, photometric, "RGB")
            image = _to_gray(array, rgb=True)
        else:
            image = np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
    except Exception as err:  # pixel decoding: compressed syntaxes without a handler, truncated data, bad LUTs
        raise DataError(path, f"cannot decode the DICOM pixel data: {safe_error(err, [ds])}") from None
    if image.ndim != 2:
        raise DataError(path, f"expected one 2D frame, got pixel data shaped {image.shape}")
    if photometric == "MONOCHROME1":  # low values are bright: invert so that lesions are bright as in MONOCHROME2
        image = float(image.max()) + float(image.min()) - image
    return image.astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read one 2D image as float32 ``(H, W)`` in its stored units (no normalisation).

    PNG (8- or 16-bit gray, RGB, palette), JPEG and other formats Pillow reads; RGB(A) becomes luma
    (0.299 R + 0.587 G + 0.114 B). DICOM (``.dcm`` or the ``DICM`` preamble; MG, DX, CR): one frame, modality LUT
    (rescale slope/intercept or LUT) applied, ``MONOCHROME1`` inverted so that dense tissue is bright; multi-frame
    instances are refused.

    Args:
        path: the image file.

    Returns:
        float32 ``(H, W)`` (rows, columns).

    Raises:
        DataError: naming the file: missing, unreadable, not an image, multi-frame DICOM.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> p = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(p)
        >>> img = read_image(p)
        >>> img.shape, img.dtype.name, float(img.max())
        ((4, 6), 'float32', 4000.0)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such image file")
    if _is_dicom(path):
        return _read_dicom(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if getattr(img, "n_frames", 1) > 1:
                raise DataError(path, f"multi-frame image ({img.n_frames} frames) refused: expected one 2D image")
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            array = np.asarray(img)
            rgb = img.mode in ("RGB", "RGBA", "RGBX", "RGBa")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(path, f"not a readable image ({type(err).__name__}: {err})") from None
    try:
        return _to_gray(array, rgb=rgb)
    except ValueError as err:
        raise DataError(path, str(err)) from None
