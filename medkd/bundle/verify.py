# SPDX-License-Identifier: Apache-2.0
"""Check a MONAI bundle in process and offline (``medkd bundle verify``): what model-zoo CI and MONAI check.

Checks, in order (each a :class:`CheckResult`; later checks are skipped, failing, when their inputs are missing):

1. ``dependency:<module>``: the hidden dependencies ``fire``, ``ignite``, ``jsonschema``, ``yaml`` are importable
   (with install hints);
2. ``files``: ``LICENSE``, ``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``,
   ``docs/README.md``;
3. ``trust``: the configs, read as data, hold no code outside medkd's allowlist (:mod:`medkd.bundle.trust`); each
   refused key is listed. When something is refused (and ``trust`` is false), nothing in the configs is run: the
   checks that would parse them (``properties``, ``net_in_out``, ``weights``) fail as not run;
4. ``metadata_schema``: ``metadata.json`` validates against the schema (medkd's own by default, never downloaded),
   as ``python -m monai.bundle verify_metadata`` does;
5. ``changelog``: the ``changelog`` has an entry for ``version``;
6. ``properties``: ``ConfigWorkflow(..., workflow_type="inference").check_properties() == []``;
7. ``net_in_out``: ``verify_net_in_out``'s test (a random ``(1, C, *spatial)`` input with ``n = p = 1``; output
   channels and dtype as in ``pred``), for image outputs; a ``pred`` of ``type: object, format: dict`` (detection)
   is checked instead for ``boxes``, ``labels`` and ``scores`` per image (``pred_dict``);
8. ``weights``: ``models/model.pt`` loads with ``torch.load(weights_only=True)`` and fits ``network_def``.

Checks the bundle's method says do not apply (its :attr:`~medkd.methods.bundle_spec.BundleSpec.skip_checks`,
found through metadata ``medkd.method``) pass as skipped, saying so.

A config that is not valid JSON, not an object, or an ``inference.json`` without ``network_def`` raises
:class:`~medkd.errors.DataError` (``medkd bundle verify`` exits 2).

Example:
    >>> [r.name for r in verify_bundle("/no/such/bundle")][-1]
    'files'
"""

from __future__ import annotations

import ast
import importlib
import json
import logging
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkd.bundle.layout import HIDDEN_DEPENDENCIES, INFERENCE, METADATA, REQUIRED_FILES, SCHEMA_PATH, WEIGHTS

__all__ = ["CheckResult", "fake_spatial_shape", "verify_bundle"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = 'pip install "medkd[bundle]"'


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: check name (``files``, ``metadata_schema``, ``dependency:fire``, ...).
        ok: whether it passed.
        message: what was found, or what is wrong and how to fix it.
    """

    name: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"


_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow,
    ast.FloorDiv: operator.floordiv,
}


def _eval_size(node: ast.AST, names: dict[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval_size(node.left, names), _eval_size(node.right, names)
        if isinstance(node.op, ast.Pow) and not 0 <= right <= 32:
            raise ValueError(f"exponent {right} out of range in {ast.unparse(node)!r}")
        value = int(_OPS[type(node.op)](left, right))
        if abs(value) > 1 << 24:
            raise ValueError(f"size {ast.unparse(node)!r} is implausibly large")
        return value
    raise ValueError(f"unsupported size expression {ast.unparse(node)!r} (use integers, '*', n, p, + - * ** //)")


def fake_spatial_shape(shape: Sequence[int | str], *, n: int = 1, p: int = 1, any_size: int = 1) -> tuple[int, ...]:
    """Sizes for a test input from a ``spatial_shape`` (``verify_net_in_out``'s rule: ``*`` -> ``any_size``).

    Raises:
        ValueError: an entry is neither an int, ``*`` nor an expression in ``n`` and ``p``.

    Example:
        >>> fake_spatial_shape(["16*n", "2**p", "*", 8], n=2, p=3)
        (32, 8, 1, 8)
    """
    sizes = []
    for entry in shape:
        if isinstance(entry, int) and not isinstance(entry, bool):
            sizes.append(entry)
        elif entry == "*":
            sizes.append(any_size)
        elif isinstance(entry, str):
            sizes.append(_eval_size(ast.parse(entry, mode="eval").body, {"n": n, "p": p}))
        else:
            raise ValueError(f"spatial_shape entries must be ints or strings, got {entry!r}")
    return tuple(sizes)


def _dependency_checks() -> list[CheckResult]:
    results = []
    for module, (dist, needed_by) in HIDDEN_DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - ImportError, or a broken install failing on import
            message = f"{dist} cannot be imported ({type(err).__name__}: {err}); needed by {needed_by}: {_INSTALL_HINT}"
            results.append(CheckResult(f"dependency:{module}", False, message))
        else:
            results.append(CheckResult(f"dependency:{module}", True, f"{dist} is installed ({needed_by})"))
    return results


def _files_check(path: Path) -> CheckResult:
    if not path.is_dir():
        return CheckResult("files", False, f"{path} is not a folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        return CheckResult("files", False, f"missing {', '.join(missing)}")
    return CheckResult("files", True, f"{', '.join(REQUIRED_FILES)} present")


def _schema_check(meta: dict[str, Any], schema: Path) -> CheckResult:
    try:
        import jsonschema
    except ImportError:
        return CheckResult("metadata_schema", False, f"jsonschema is missing: {_INSTALL_HINT}")
    try:
        schema_doc = json.loads(schema.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return CheckResult("metadata_schema", False, f"cannot read schema {schema}: {err}")
    try:
        jsonschema.validate(instance=meta, schema=schema_doc)
    except jsonschema.ValidationError as err:
        where = "/".join(map(str, err.absolute_path)) or "(top level)"
        return CheckResult("metadata_schema", False, f"{where}: {err.message} (schema {schema})")
    except jsonschema.SchemaError as err:
        return CheckResult("metadata_schema", False, f"invalid schema {schema}: {err.message}")
    return CheckResult("metadata_schema", True, f"valid against {schema}")


def _changelog_check(meta: dict[str, Any]) -> CheckResult:
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(changelog, dict) or version not in changelog:
        return CheckResult("changelog", False, f"changelog has no entry for version {version!r}")
    return CheckResult("changelog", True, f"version {version}: {changelog[version]}")


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """Silence MONAI's workflow logger and warnings (e.g. "Logging file is set to False") during a check."""
    monai_logger = logging.getLogger("monai.bundle.workflows")
    level = monai_logger.level
    monai_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        monai_logger.setLevel(level)


def _properties_check(path: Path) -> CheckResult:
    from monai.bundle import ConfigWorkflow

    try:
        with _quiet_monai():
            workflow = ConfigWorkflow(
                config_file=str(path / INFERENCE), meta_file=str(path / METADATA), logging_file=False,
                workflow_type="inference", bundle_root=str(path),
            )
            workflow.initialize()
            missing = workflow.check_properties()
    except Exception as err:  # noqa: BLE001 - any failure to build the workflow is the finding
        return CheckResult("properties", False, f"ConfigWorkflow failed: {_first_line(err)}")
    if missing:
        return CheckResult("properties", False, f"missing or wrongly referenced inference properties: {missing}")
    return CheckResult("properties", True, "ConfigWorkflow(workflow_type='inference').check_properties() == []")


def _first_line(err: BaseException) -> str:
    """``Type: first line`` of an error, plus its cause (MONAI wraps the real reason in ``__cause__``)."""
    def line(e: BaseException) -> str:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__

    return line(err) + (f" (caused by {line(err.__cause__)})" if err.__cause__ is not None else "")


def _net_in_out_check(meta: dict[str, Any], network: Any) -> CheckResult:
    import torch
    from monai.utils import get_equivalent_dtype

    try:
        image = meta["network_data_format"]["inputs"]["image"]
        pred = meta["network_data_format"]["outputs"]["pred"]
    except (KeyError, TypeError):
        return CheckResult("net_in_out", False, "network_data_format needs inputs.image and outputs.pred")
    if pred.get("type") != "image":
        return CheckResult("net_in_out", True, f"skipped: pred is of type {pred.get('type')!r} (not an image)")
    try:
        shape = (1, int(image["num_channels"]), *fake_spatial_shape(image["spatial_shape"]))
        in_dtype = get_equivalent_dtype(image["dtype"], torch.Tensor)
        out_dtype = get_equivalent_dtype(pred["dtype"], torch.Tensor)
        network = network.to("cpu").eval()
        with torch.no_grad():
            output = network(torch.rand(*shape, dtype=in_dtype))
    except Exception as err:  # noqa: BLE001 - the network failing on the declared input is the finding
        return CheckResult("net_in_out", False, f"forward of a {image.get('spatial_shape')} input failed: {err}")
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        return CheckResult("net_in_out", False, f"output is a {type(output).__name__}, not a (B, C, ...) tensor as "
                                                f"pred of type 'image' says")
    if output.shape[1] != pred.get("num_channels") or output.dtype != out_dtype:
        return CheckResult(
            "net_in_out", False,
            f"output {tuple(output.shape)} {output.dtype} does not match pred: {pred.get('num_channels')} channels, "
            f"{pred.get('dtype')}",
        )
    return CheckResult("net_in_out", True, f"input {shape} -> output {tuple(output.shape)} {output.dtype}")


_DICT_KEYS = ("boxes", "labels", "scores")


def _dict_output_check(image: dict[str, Any], network: Any) -> CheckResult:
    """A detector's output on a random input: a dict (or a list of dicts, one per image) with boxes, labels, scores."""
    import torch
    from monai.utils import get_equivalent_dtype

    try:
        shape = (1, int(image["num_channels"]), *fake_spatial_shape(image["spatial_shape"]))
        network = network.to("cpu").eval()
        with torch.no_grad():
            output = network(torch.rand(*shape, dtype=get_equivalent_dtype(image["dtype"], torch.Tensor)))
    except Exception as err:  # noqa: BLE001 - the network failing on the declared input is the finding
        return CheckResult("pred_dict", False, f"forward of a {image.get('spatial_shape')} input failed: {err}")
    items = output if isinstance(output, (list, tuple)) else [output]
    missing = sorted({k for item in items for k in _DICT_KEYS if not isinstance(item, dict) or k not in item})
    if not items or missing:
        return CheckResult("pred_dict", False, f"output per image must be a dict with {', '.join(_DICT_KEYS)}; "
                                               f"missing {', '.join(missing) or 'every image'}")
    return CheckResult("pred_dict", True, f"input {shape} -> {len(items)} dict(s) with {', '.join(_DICT_KEYS)}")


def _skipped(meta: dict[str, Any]) -> tuple[str | None, frozenset[str]]:
    """(method, the checks its bundle spec skips); (None, nothing) for a bundle of no known method."""
    from medkd.methods.bundle_spec import find_bundle_spec

    info = meta.get("medkd") if isinstance(meta.get("medkd"), dict) else {}
    method = info.get("method")
    if not isinstance(method, str):
        return None, frozenset()
    try:
        kind = info.get("kind")
        spec = find_bundle_spec(method, kind if isinstance(kind, str) else None)
    except ImportError as err:
        logger.warning("the bundle spec of method %r cannot be imported (%s): running every check", method, err)
        return method, frozenset()
    return method, spec.skip_checks if spec is not None else frozenset()


def _weights_check(path: Path, network: Any) -> CheckResult:
    from medkd.bundle.predictor import load_weights
    from medkd.engine.predictor import file_sha256
    from medkd.errors import DataError

    try:
        load_weights(path, network)
    except DataError as err:
        return CheckResult("weights", False, err.problem)
    tensors = len(network.state_dict())
    return CheckResult("weights", True, f"{WEIGHTS} ({tensors} tensors, sha256 {file_sha256(path / WEIGHTS)[:12]}...) "
                                        "loads with weights_only=True and fits network_def")


def verify_bundle(
    path: str | Path, *, schema: str | Path | None = None, trust: bool = False
) -> list[CheckResult]:
    """Run the checks of the module docstring on a bundle folder.

    Args:
        path: bundle folder.
        schema: JSON schema for ``metadata.json``; default :data:`~medkd.bundle.layout.SCHEMA_PATH` (the official
            ``meta_schema_20240725.json``, downloaded by hand, may be passed instead).
        trust: run the checks that parse the configs even if they hold code outside medkd's allowlist
            (``--trust-bundle``); only for bundles you trust.

    Returns:
        One :class:`CheckResult` per check; the bundle is good if all are ``ok``.

    Raises:
        DataError: ``metadata.json`` or ``inference.json`` is not valid JSON or not an object, or ``inference.json``
            has no ``network_def``.
    """
    results = _run_checks(Path(path), Path(schema) if schema is not None else SCHEMA_PATH, trust)
    for result in results:
        logger.debug("%s", result)
    return results


def _trust_check(path: Path, trust: bool) -> CheckResult:
    from medkd.bundle.trust import TRUST_HINT, check_bundle_trust

    refusals = check_bundle_trust(path)
    if not refusals:
        return CheckResult("trust", True, "the configs hold only code in medkd's allowlist (loads without "
                                          "--trust-bundle)")
    listed = "".join(f"\n    {r}" for r in refusals)
    if trust:
        logger.warning("%s: --trust-bundle: %d config value(s) outside the allowlist will run", path, len(refusals))
        return CheckResult("trust", True, f"--trust-bundle given: {len(refusals)} value(s) outside medkd's allowlist "
                                          f"run as code:{listed}")
    return CheckResult("trust", False, f"refused {len(refusals)} value(s) that would run as code outside medkd's "
                                       f"allowlist (nothing was run; {TRUST_HINT}):{listed}")


_PARSING_CHECKS = ("properties", "net_in_out", "weights")


def _run_checks(path: Path, schema: Path, trust: bool = False) -> list[CheckResult]:
    from medkd.bundle.config_files import read_inference, read_metadata
    from medkd.bundle.predictor import parse_bundle
    from medkd.errors import DataError

    results = _dependency_checks()
    results.append(_files_check(path))
    if not (path / METADATA).is_file():
        return results
    meta = read_metadata(path)
    has_inference = (path / INFERENCE).is_file()
    if has_inference:
        read_inference(path)
    trusted = _trust_check(path, trust)
    results += [trusted, _schema_check(meta, schema), _changelog_check(meta)]
    if not has_inference:
        return results + [CheckResult("properties", False, f"{INFERENCE} is missing")]
    if not trusted.ok:
        return results + [CheckResult(name, False, "not run: the configs hold refused code (see trust)")
                          for name in _PARSING_CHECKS]
    method, skip = _skipped(meta)

    def skipped(name: str) -> CheckResult:
        return CheckResult(name, True, f"skipped: does not apply to bundles of method {method!r}")

    results.append(skipped("properties") if "properties" in skip else _properties_check(path))
    try:
        network = parse_bundle(path, ("network_def",), trust=True)["network_def"]  # checked above (or trusted)
    except DataError as err:
        return results + [CheckResult("net_in_out", False, err.problem), CheckResult("weights", False, "no network")]
    image, pred = _tensor(meta, "inputs", "image"), _tensor(meta, "outputs", "pred")
    if pred.get("type") == "object" and pred.get("format") == "dict":
        results += [CheckResult("net_in_out", True, "skipped: pred is a dict per image (detection), as model-zoo "
                                                    "does; see pred_dict"), _dict_output_check(image, network)]
    else:
        results.append(skipped("net_in_out") if "net_in_out" in skip else _net_in_out_check(meta, network))
    return results + [skipped("weights") if "weights" in skip else _weights_check(path, network)]


def _tensor(meta: dict[str, Any], group: str, name: str) -> dict[str, Any]:
    """``network_data_format[group][name]``, or an empty dict."""
    nd = meta.get("network_data_format")
    found = nd.get(group, {}).get(name) if isinstance(nd, dict) and isinstance(nd.get(group), dict) else None
    return found if isinstance(found, dict) else {}
