# SPDX-License-Identifier: Apache-2.0
"""Image classification datasets on disk: class folders or a CSV datalist, read into labelled items and a dataset.

Two layouts are accepted by :func:`read_classification_split`:

* **class folders** ``<root>/<split>/<class name>/<image>`` with images ``*.png``, ``*.jpg``/``*.jpeg``,
  ``*.nii.gz`` or ``*.nii`` (torchvision ``ImageFolder`` per split). The class names are the sorted subfolder
  names of ``<root>/train`` (of the requested split when there is no ``train`` folder), so a label index means the
  same class in every split; a class folder of another split that ``train`` lacks is an error, an empty class
  folder is allowed. The case id of an image is its file name without the ending (``<class>/<name>`` for every
  image of the split if two classes hold the same name).
* **a CSV datalist** with a header holding ``image`` and ``label`` columns: ``image`` a path relative to the CSV's
  folder (or absolute); ``label`` a class name or an integer class index. Every other column (``case``, ``split``,
  ``modality``, ``anatomy``, ``severity``, ...) is kept, as text, in the item's ``metadata``; ``case`` (when present
  and not empty) is the case id, else the image's file name without the ending. With a ``split`` column only the
  rows of the requested split are read; **without one every row belongs to whatever split is requested** (a CSV per
  split). Class names are the sorted label names of all rows, whatever their split, so indices agree between the
  splits of one CSV; integer labels index them. A CSV of integer labels only has the classes ``"0"`` ... ``str(max)``.

Both layouts take ``class_names``: the classes in index order, for splits read from separate CSVs or folders that
lack a class, or to fix the order; every label (class folder) must then be one of them.

:func:`load_image` reads PNG/JPEG with PIL (grayscale -> 1 channel, RGB -> 3, alpha dropped, scaled to [0, 1]) and
NIfTI with SimpleITK (1 channel, raw intensities; a single-slice volume is read as 2-D).
:class:`ClassificationDataset` turns a split into ``{"image", "label", "case"}`` dicts of tensors.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name, value in (("benign", 40), ("malignant", 200)):
    ...     (root / "train" / name).mkdir(parents=True)
    ...     Image.fromarray(np.full((8, 8), value, np.uint8)).save(root / "train" / name / f"{name}_1.png")
    >>> split = read_classification_split(root, "train")
    >>> split.class_names, [(item.case, item.label) for item in split.items]
    (('benign', 'malignant'), [('benign_1', 0), ('malignant_1', 1)])
    >>> item = ClassificationDataset(split, size=16)[1]
    >>> item["image"].shape, item["label"], item["case"]
    (torch.Size([1, 16, 16]), tensor(1), 'malignant_1')
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medkd.errors import DataError
from medkd.keys import Keys

__all__ = [
    "CLASSIFICATION_IMAGE_SUFFIXES",
    "read_datalist_rows",
    "resize_image",
    "ClassificationDataset",
    "ClassificationItem",
    "ClassificationSplit",
    "image_channels",
    "load_image",
    "read_classification_split",
]

logger = logging.getLogger(__name__)

_PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: image file endings read by :func:`load_image` (case-insensitive)
CLASSIFICATION_IMAGE_SUFFIXES: tuple[str, ...] = _PIL_SUFFIXES + _NIFTI_SUFFIXES
_TRAIN = "train"
# PIL modes: channels and what to convert to before reading the pixels (None: read as is)
_GRAY_MODES = {"1": "L", "L": None, "LA": "L", "La": "L", "I": None, "I;16": None, "I;16B": None, "I;16L": None,
               "F": None}
_COLOUR_MODES = {"RGB": None, "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB",
                 "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


@dataclass(frozen=True)
class ClassificationItem:
    """One labelled image.

    Attributes:
        case: case id, unique within a split read from class folders (from the ``case`` column for a CSV).
        path: the image file, absolute.
        label: class index into :attr:`ClassificationSplit.class_names`.
        metadata: the CSV row's other columns as text (empty for class folders).
    """

    case: str
    path: Path
    label: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassificationSplit:
    """The items of one split and the class names their labels index.

    Attributes:
        items: the labelled images, by label index then file name (class folders), or in CSV order.
        class_names: class names; label ``k`` is ``class_names[k]``.
        split: the split read.
        source: the split folder or the CSV file.
        channels: channels every image of the split has (1 or 3).
    """

    items: list[ClassificationItem]
    class_names: tuple[str, ...]
    split: str = ""
    source: Path = Path()
    channels: int = 1

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def labels(self) -> list[int]:
        """The label of every item, in item order."""
        return [item.label for item in self.items]


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in CLASSIFICATION_IMAGE_SUFFIXES if name.endswith(s)), None)


def _stem(path: Path) -> str:
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _open_pil(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except FileNotFoundError as exc:
        raise DataError(path, "image file not found") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(path, f"cannot read image ({exc})") from exc


def _pil_channels(path: Path, mode: str) -> int:
    if mode in _GRAY_MODES:
        return 1
    if mode in _COLOUR_MODES:
        return 3
    raise DataError(path, f"unsupported image mode {mode!r} (grayscale or RGB expected)")


def image_channels(path: str | Path) -> int:
    """Channels :func:`load_image` gives for a file, from its header only: 1 or 3 for PNG/JPEG, 1 for NIfTI.

    Raises:
        DataError: an unknown ending, a missing file, or a PNG/JPEG whose header cannot be read.

    Example:
        >>> image_channels("scan.nii.gz")
        1
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(path, f"not an image file (expected one of {', '.join(CLASSIFICATION_IMAGE_SUFFIXES)})")
    if suffix in _NIFTI_SUFFIXES:
        return 1
    with _open_pil(path) as image:
        return _pil_channels(path, image.mode)


def _pil_array(path: Path) -> np.ndarray:
    with _open_pil(path) as image:
        mode = image.mode
        channels = _pil_channels(path, mode)
        convert = (_GRAY_MODES if channels == 1 else _COLOUR_MODES)[mode]
        try:
            image.load()
            array = np.asarray(image.convert(convert) if convert else image)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
            raise DataError(path, f"cannot decode image ({exc})") from exc
    if array.dtype == np.uint8 or array.dtype == bool:
        array = array.astype(np.float32) / (1.0 if array.dtype == bool else 255.0)
    elif array.dtype.kind in "iu":  # 16-bit grayscale ("I;16", or "I" holding 16-bit values)
        array = array.astype(np.float32) / (65535.0 if array.max(initial=0) <= 65535 else float(array.max()))
    else:
        array = array.astype(np.float32)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def load_image(path: str | Path) -> np.ndarray:
    """Read one image as a float32 array with a channel axis.

    PNG/JPEG: ``(C, H, W)`` with C = 1 for grayscale (also 1-bit, 16-bit and gray+alpha), 3 for RGB (also RGBA,
    palette, CMYK; alpha is dropped); 8-bit values are divided by 255, 16-bit values by 65535. NIfTI (``.nii``,
    ``.nii.gz``, read with SimpleITK, array in ``(z, y, x)`` order): ``(1, D, H, W)``, or ``(1, H, W)`` for a 2-D
    image or a volume of one slice; intensities are not rescaled.

    Args:
        path: the image file.

    Returns:
        float32 ``(C, H, W)`` or ``(1, D, H, W)``.

    Raises:
        DataError: naming ``path``: not found, not an image ending, unreadable or corrupt, an unsupported mode,
            or a multi-component NIfTI.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "rgb.png"
        >>> Image.new("RGB", (5, 4), (255, 0, 51)).save(path)
        >>> image = load_image(path)
        >>> image.shape, image.dtype.name, image[:, 0, 0].tolist()
        ((3, 4, 5), 'float32', [1.0, 0.0, 0.20000000298023224])
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(path, f"not an image file (expected one of {', '.join(CLASSIFICATION_IMAGE_SUFFIXES)})")
    if suffix in _PIL_SUFFIXES:
        return _pil_array(path)
    from medkd.io.volume_io import read_volume

    array = read_volume(path).array  # (z, y, x) float32; a 2-D file gives (1, y, x)
    return np.ascontiguousarray(array if array.shape[0] == 1 else array[None])


def resize_image(image: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """``image`` ``(C, *spatial)`` resized to ``size`` (bilinear in 2-D, trilinear in 3-D, ``align_corners=False``);
    unchanged if it has that size already. The classification datasets' and predictors' one resize.

    Raises:
        ValueError: ``size`` has another number of axes than the image's spatial axes.

    Example:
        >>> resize_image(torch.ones(1, 4, 6), (8, 3)).shape
        torch.Size([1, 8, 3])
    """
    dims = image.ndim - 1
    target = (size,) * dims if isinstance(size, int) else tuple(int(s) for s in size)
    if len(target) != dims:
        raise ValueError(f"image has {dims} spatial axes {tuple(image.shape[1:])}, size has {len(target)}")
    if tuple(image.shape[1:]) == target:
        return image
    mode = "bilinear" if dims == 2 else "trilinear"
    return F.interpolate(image[None], size=target, mode=mode, align_corners=False)[0]


def _check_channels(items: Sequence[ClassificationItem], source: Path) -> int:
    """The common channel count of the items' images (headers only); a DataError names the first odd one."""
    if not items:
        return 1
    channels = [image_channels(item.path) for item in items]
    common, _ = Counter(channels).most_common(1)[0]
    odd = next((i for i, c in enumerate(channels) if c != common), None)
    if odd is not None:
        example = items[channels.index(common)].path
        raise DataError(
            items[odd].path,
            f"image has {channels[odd]} channel(s) but the other images of {source} have {common} (e.g. {example})",
        )
    return common


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folders(root: Path, split: str, class_names: tuple[str, ...] | None) -> ClassificationSplit:
    split_dir = root / split
    if not split_dir.is_dir():
        found = _class_folders(root) if root.is_dir() else []
        hint = f" (splits here: {', '.join(found)})" if found else ""
        raise DataError(split_dir, f"split folder not found{hint}")
    reference = root / _TRAIN if (root / _TRAIN).is_dir() else split_dir
    if not _class_folders(split_dir):
        raise DataError(split_dir, "no class folders (expected <split>/<class name>/<images>)")
    origin = f"the classes of {reference}" if class_names is None else "the given class_names"
    if class_names is None:
        class_names = tuple(_class_folders(reference))
        if not class_names:
            raise DataError(reference, "no class folders (expected <split>/<class name>/<images>)")
    unknown = [name for name in _class_folders(split_dir) if name not in class_names]
    if unknown:
        raise DataError(split_dir / unknown[0], f"class {unknown[0]!r} is not among {origin}: {class_names}")
    found: list[tuple[str, Path, int]] = []
    for label, name in enumerate(class_names):
        folder = split_dir / name
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.is_file() and _suffix(p) is not None)
            found += [(name, p.resolve(), label) for p in files]
    if not found:
        raise DataError(
            split_dir, f"no images ({', '.join(CLASSIFICATION_IMAGE_SUFFIXES)}) in the class folders {class_names}"
        )
    stems = [_stem(path) for _, path, _ in found]
    duplicated = len(set(stems)) < len(stems)
    if duplicated:
        logger.warning("%s: image names repeat across class folders; case ids are <class>/<name>", split_dir)
    items = [
        ClassificationItem(f"{name}/{stem}" if duplicated else stem, path, label)
        for (name, path, label), stem in zip(found, stems, strict=True)
    ]
    channels = _check_channels(items, split_dir)
    logger.info("%s: %d images in %d classes", split_dir, len(items), len(class_names))
    return ClassificationSplit(items, class_names, split, split_dir, channels)


def read_datalist_rows(path: Path, required: Sequence[str] = (Keys.IMAGE.value, Keys.LABEL.value)
                       ) -> list[dict[str, str]]:
    """The rows of a CSV datalist (keys and values stripped, a UTF-8 BOM ignored).

    Raises:
        DataError: naming the file: missing, unreadable, or without one of the ``required`` columns.
    """
    if not path.is_file():
        raise DataError(path, "datalist CSV not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(path, f"datalist CSV lacks the column(s) {missing} (header: {columns})")
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"cannot read datalist CSV ({exc})") from exc
    return rows


def _is_index(label: str) -> bool:
    return label.isdigit()


def _csv_class_names(rows: Sequence[Mapping[str, str]], path: Path) -> tuple[str, ...]:
    labels = [r[Keys.LABEL.value] for r in rows]
    names = sorted({label for label in labels if label and not _is_index(label)})
    if names:
        return tuple(names)
    indices = [int(label) for label in labels if label]
    if not indices:
        raise DataError(path, "datalist CSV has no labels")
    return tuple(str(k) for k in range(max(indices) + 1))


def _read_csv(root: Path, split: str, datalist: Path, class_names: tuple[str, ...] | None) -> ClassificationSplit:
    path = root / datalist  # an absolute datalist stays as it is
    rows = read_datalist_rows(path)
    class_names = class_names or _csv_class_names(rows, path)
    has_split = bool(rows) and "split" in rows[0]
    selected = [(i, r) for i, r in enumerate(rows) if not has_split or r.get("split") == split]
    if not selected:
        splits = sorted({r.get("split", "") for r in rows})
        raise DataError(path, f"no rows of split {split!r}" + (f" (splits: {splits})" if has_split else ""))
    lookup = {name: k for k, name in enumerate(class_names)}
    items = []
    for i, row in selected:
        line = i + 2  # the header is line 1
        image, label = row[Keys.IMAGE.value], row[Keys.LABEL.value]
        if not image:
            raise DataError(path, f"line {line}: empty 'image'")
        image_path = (path.parent / image).resolve()
        if not image_path.is_file():
            raise DataError(image_path, f"image listed on line {line} of {path} not found")
        if _is_index(label) and label not in lookup:
            if int(label) >= len(class_names):
                raise DataError(path, f"line {line}: label index {label} is out of range for {len(class_names)} "
                                      f"classes {class_names}")
            index = int(label)
        elif label in lookup:
            index = lookup[label]
        else:
            raise DataError(path, f"line {line}: label {label!r} is not among the classes {class_names}")
        metadata = {k: v for k, v in row.items() if k not in (Keys.IMAGE.value, Keys.LABEL.value)}
        case = metadata.get("case") or _stem(image_path)
        items.append(ClassificationItem(case, image_path, index, metadata))
    channels = _check_channels(items, path)
    logger.info("%s (%s): %d images in %d classes", path, split, len(items), len(class_names))
    return ClassificationSplit(items, class_names, split, path, channels)


def read_classification_split(
    root: str | Path,
    split: str,
    *,
    datalist: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> ClassificationSplit:
    """Read one split of a classification dataset, from class folders or a CSV datalist (module docstring).

    Every image's header is opened to check that all images of the split have the same number of channels.

    Args:
        root: the dataset folder (holding ``<split>/<class>/`` folders, or the datalist).
        split: ``train``, ``val``, ``test`` or any other split folder / ``split`` value.
        datalist: a CSV datalist, relative to ``root`` or absolute; ``None`` reads class folders.
        class_names: the classes in label-index order; ``None`` takes them from the data (module docstring).

    Returns:
        The :class:`ClassificationSplit`.

    Raises:
        DataError: naming the file or folder: a missing split folder or CSV, no class folders, a class folder
            outside the train split's classes (or ``class_names``), no images, a CSV without ``image``/``label``
            columns or without rows of ``split``, a listed image that does not exist, a label name not among the
            classes or an index out of range, an unreadable image header, or images of different channel counts.
        ValueError: ``class_names`` empty or repeated.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=5, n_train=5, n_val=5, n_test=0,
        ...                              n_unlabelled=0, size=32)
        >>> csv_split = read_classification_split(root, "val", datalist=write_classification_datalist(root))
        >>> folder_split = read_classification_split(root, "val")
        >>> def cases(s): return sorted((i.case, i.label) for i in s.items)
        >>> cases(csv_split) == cases(folder_split)
        True
        >>> sorted(csv_split.items[0].metadata)
        ['anatomy', 'case', 'modality', 'severity', 'split', 'true_label']
    """
    root = Path(root)
    names = None
    if class_names is not None:
        names = tuple(str(name) for name in class_names)
        if not names or len(set(names)) < len(names):
            raise ValueError(f"class_names must be distinct and not empty, got {class_names}")
    if datalist is None:
        return _read_folders(root, split, names)
    return _read_csv(root, split, Path(datalist), names)


class ClassificationDataset(Dataset):
    """The images of a :class:`ClassificationSplit` as tensors.

    Each item is ``{"image": float32 (C, H, W) or (C, D, H, W), "label": int64 scalar, "case": str}`` (then
    ``transform``). With ``size`` the image is resized (bilinear in 2-D, trilinear in 3-D, ``align_corners=False``).

    Args:
        split: the items, from :func:`read_classification_split`.
        size: output spatial size: an int for every axis, or one value per axis; ``None`` keeps the file's size.
        transform: optional callable on the item dict.

    Raises:
        DataError: when an item is read: an unreadable or corrupt image, a channel count other than the split's,
            or an image whose number of axes does not match ``size``.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=1, n_train=3, n_val=1, n_test=1,
        ...                              n_unlabelled=0, size=32)
        >>> ds = ClassificationDataset(read_classification_split(root, "train"), size=(24, 16))
        >>> len(ds), ds[0]["image"].shape, ds[0]["label"].dtype
        (3, torch.Size([1, 24, 16]), torch.int64)
    """

    def __init__(
        self,
        split: ClassificationSplit,
        *,
        size: int | Sequence[int] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if size is not None and min([size] if isinstance(size, int) else list(size)) < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.split = split
        self.size = size
        self.transform = transform

    @property
    def class_names(self) -> tuple[str, ...]:
        """The split's class names."""
        return self.split.class_names

    def __len__(self) -> int:
        return len(self.split.items)

    def _resize(self, image: torch.Tensor, path: Path) -> torch.Tensor:
        try:
            return resize_image(image, self.size if self.size is not None else image.shape[1:])
        except ValueError as err:
            raise DataError(path, str(err)) from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.split.items[index]
        image = torch.from_numpy(load_image(entry.path))
        if image.shape[0] != self.split.channels:
            raise DataError(
                entry.path, f"image has {image.shape[0]} channel(s), the split {self.split.source} has "
                f"{self.split.channels}"
            )
        if self.size is not None:
            image = self._resize(image, entry.path)
        item: dict[str, Any] = {
            Keys.IMAGE.value: image,
            Keys.LABEL.value: torch.tensor(entry.label, dtype=torch.long),
            Keys.CASE.value: entry.case,
        }
        return self.transform(item) if self.transform is not None else item
