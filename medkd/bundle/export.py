# SPDX-License-Identifier: Apache-2.0
"""Export a trained medkd run as a MONAI bundle (``medkd bundle export``), for any method that provides a
:class:`~medkd.methods.bundle_spec.BundleSpec`.

``RUN/run.json`` names the run's method; its spec loads the network and says what the bundle describes and runs.
This module writes the layout of :mod:`medkd.bundle.layout`: the weights as a plain state_dict, a
``metadata.json`` that passes ``verify_metadata`` against :data:`~medkd.bundle.layout.SCHEMA_PATH`, an
``inference.json`` built from the spec's components, the model card and the data licence. The folder is built next
to ``out`` and moved into place at the end, so a failed export never leaves a half-written bundle, and it is
checked against medkd's trust allowlist so medkd loads its own exports without ``--trust-bundle``.

Example:
    >>> export_bundle("runs/my_run", "models/my_model")  # doctest: +SKIP
    PosixPath('models/my_model')
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from medkd.bundle.inference_config import inference_config
from medkd.bundle.layout import (
    DATA_LICENSE,
    INFERENCE,
    LICENSE,
    LOGGING,
    METADATA,
    README,
    TEMPLATES_DIR,
    TORCHSCRIPT,
    WEIGHTS,
)
from medkd.bundle.metadata import build_metadata
from medkd.bundle.model_card import CODE_NOTE, markdown_table, performance_section, render_readme
from medkd.bundle.trust import check_bundle_trust, require_trusted
from medkd.engine.predictor import file_sha256
from medkd.errors import DataError
from medkd.methods.bundle_spec import (
    NIFTI_PATTERNS,
    BundleSpec,
    DatasetCard,
    ExportModel,
    ModelCardText,
    get_bundle_spec,
)

__all__ = ["export_bundle", "export_torchscript", "spec_of_run"]

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.+-]*)?$")  # as in schemas/metadata_schema.json
_VERIFY_NET_IN_OUT = (
    "python -m monai.bundle verify_net_in_out network_def --meta_file {b}/configs/metadata.json \\\n"
    "    --config_file {b}/configs/inference.json --n 1 --device cpu\n"
)


def _check_out(out: Path, run: Path, overwrite: bool) -> None:
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise DataError(out, f"the bundle folder must lie outside the run folder {run}")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise DataError(out, "already exists; pass overwrite=True (medkd bundle export --overwrite) to replace it")
    if not out.is_dir() or not (out / METADATA).is_file():
        raise DataError(out, "exists and is not a MONAI bundle: refusing to replace it, choose another folder")


def _plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous (channels_last training leaves NHWC strides) copies: same values, portable layout."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _readme_values(
    *, spec: BundleSpec, model: ExportModel, text: ModelCardText, meta: dict[str, Any], card: DatasetCard, out: Path,
) -> dict[str, Any]:
    import medkd

    labels = meta["label_classes"]
    labels_table = markdown_table(
        [[e["value"], e["name"], e["code"]["meaning"], f"{e['code']['scheme']} {e['code']['value']}"] for e in labels]
    )
    config = meta["medkd"]["config"]
    training_table = markdown_table([[f"`{k}`", f"`{config[k]}`"] for k in text.training_keys if k in config])
    has_terms = card.terms is not None
    bundle_path = f"models/{out.name}"
    return {
        "title": meta["name"], "intended_use": spec.intended_use, "description": meta["description"],
        "method_long": text.method_long, "network": text.network, "inference": text.inference,
        "version": meta["version"], "medkd_version": medkd.__version__, "run": model.run.resolve().name,
        "checkpoint": f"{model.stage}/{model.checkpoint_file.name}", "weights_sha256": meta["medkd"]["weights_sha256"],
        "labels_table": labels_table, "input_output": text.input_output,
        "data_text": f"Data layout: **{card.title}**. {card.source}; {card.data_type}."
        + (" See `docs/data_license.txt` for the data's terms." if has_terms else ""),
        "training_table": training_table,
        "performance": performance_section(
            model.run, model.stage, val_split=text.validation_split, metrics=text.metrics,
            validation_score=text.validation_score, eval_command=text.eval_command,
        ),
        "limitations": "\n".join(f"- {item}" for item in text.limitations),
        "how_to_run": text.how_to_run.replace("{bundle_path}", bundle_path),
        "verify_net_in_out": "" if "net_in_out" in spec.skip_checks else _VERIFY_NET_IN_OUT.format(b=bundle_path),
        "code_note": f"{text.equivalence} {CODE_NOTE}" if text.equivalence else CODE_NOTE,
        "bundle_path": bundle_path,
        "input_dir": "NIFTI_DIR" if tuple(spec.input_patterns) == NIFTI_PATTERNS else "INPUT_DIR",
        "references": "\n".join(f"- {ref}" for ref in meta["references"]),
        "data_license_note": " The training data's terms: `docs/data_license.txt`." if has_terms else "",
    }


def export_torchscript(bundle: Path, *, trust: bool = False) -> Path | None:
    """Write ``models/model.ts`` with MONAI's ``ckpt_export`` (traced on a ``"16*n"``, ``n=1`` input).

    torch 2.15 deprecates TorchScript in favour of ``torch.export``; a failure only warns.

    Args:
        bundle: bundle folder.
        trust: parse configs that hold code outside medkd's allowlist (:func:`~medkd.bundle.trust.require_trusted`).

    Returns:
        The file written, or None on failure.

    Raises:
        UntrustedBundleError: the configs hold code outside medkd's allowlist and ``trust`` is false.
    """
    from monai.bundle import ckpt_export

    require_trusted(bundle, trust)
    target = bundle / TORCHSCRIPT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt_export(
                net_id="network_def", filepath=str(target), ckpt_file=str(bundle / WEIGHTS),
                meta_file=str(bundle / METADATA), config_file=str(bundle / INFERENCE), bundle_root=str(bundle),
                use_trace=True,
            )
    except Exception as err:  # noqa: BLE001 - TorchScript is optional: any failure becomes a warning
        target.unlink(missing_ok=True)
        warnings.warn(f"TorchScript export failed, the bundle has no {TORCHSCRIPT}: {type(err).__name__}: {err}",
                      RuntimeWarning, stacklevel=2)
        return None
    return target


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def spec_of_run(run: str | Path) -> BundleSpec:
    """The :class:`~medkd.methods.bundle_spec.BundleSpec` of a run's method (``RUN/run.json``, or the legacy method
    of a folder without it: :func:`medkd.runs.read_run_info`).

    Raises:
        DataError: ``run`` is not a medkd run folder, or its method provides no bundle spec (the message names it).
    """
    from medkd.runs import read_run_info

    info = read_run_info(run)
    spec = get_bundle_spec(info["method"], run, info["kind"])
    if spec.kind != info["kind"]:
        logger.warning("%s: run.json says kind %r, the bundle spec of %r says %r", run, info["kind"], spec.method,
                       spec.kind)
    return spec


def _build(
    folder: Path, spec: BundleSpec, run: Path, out: Path, *, checkpoint: str, stage: str | None, version: str,
    description: str | None,
) -> None:
    from medkd.io.labels import labels_from_names

    model = spec.load(run, checkpoint, stage)
    (folder / "models").mkdir(parents=True)
    torch.save(_plain_state(model.state), folder / WEIGHTS)

    names = spec.label_names(model)
    card = spec.dataset_card(model)
    task, default_description = spec.describe(model, names, card)
    medkd_block = {
        "kind": spec.kind, "method": spec.method, **spec.provenance(model), "net": model.net,
        "run": run.resolve().name, "stage": model.stage, "checkpoint": model.checkpoint_file.name,
        "iteration": int(model.iteration), "best_score": model.best_score,
        "source_checkpoint_sha256": file_sha256(model.checkpoint_file), "weights_sha256": file_sha256(folder / WEIGHTS),
        **spec.recipe(model), "config": model.config_dict,
    }
    meta = build_metadata(
        name=out.name, version=version, description=description or default_description, task=task,
        references=spec.references, labels=labels_from_names(names, background=spec.background), card=card,
        network_data_format=spec.network_data_format(model, names, card, getattr(model.network, "size_divisor", None)),
        medkd_block=medkd_block, intended_use=spec.intended_use,
    )
    _write_json(folder / METADATA, meta)
    _write_json(folder / INFERENCE, inference_config(
        spec.network_def(model), inferer=spec.inferer(model), preprocessing=spec.preprocessing(model),
        postprocessing=spec.postprocessing(model), input_patterns=spec.input_patterns,
    ))
    shutil.copyfile(TEMPLATES_DIR / "logging.conf", folder / LOGGING)
    shutil.copyfile(TEMPLATES_DIR / "LICENSE", folder / LICENSE)
    readme = render_readme(_readme_values(spec=spec, model=model, text=spec.model_card(model), meta=meta, card=card,
                                          out=out))
    (folder / README).parent.mkdir(parents=True, exist_ok=True)
    (folder / README).write_text(readme, encoding="utf-8")
    if card.terms:
        (folder / DATA_LICENSE).write_text(card.terms + "\n", encoding="utf-8")
    _check_own_configs(folder, run)


def _check_own_configs(folder: Path, run: Path) -> None:
    """medkd's exports load without ``--trust-bundle``: refuse to write one that would not (a description or run
    name starting with ``$`` would be code to MONAI)."""
    refusals = check_bundle_trust(folder)
    if refusals:
        first = refusals[0]
        raise DataError(run, f"the bundle would not pass medkd's trust check: {first.file.split('/')[-1]} "
                             f"{first.key}: {first.text!r} {first.why}; choose another description or names")


def export_bundle(
    run: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "best",
    stage: str | None = None,
    version: str = "0.1.0",
    torchscript: bool = False,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write a MONAI bundle of the network a run's method exports into ``out`` (``models/<snake_name>/``).

    Args:
        run: run folder written by a method's ``train`` (``RUN/run.json``; legacy runs: ``RUN/config.yaml``).
        out: bundle folder to create; its name is the bundle's ``name``.
        checkpoint: ``best`` (falls back to ``last``) or ``last``.
        stage: one of the method's stages (:attr:`~medkd.methods.bundle_spec.BundleSpec.stages`); default the
            run's final stage.
        version: bundle version (``metadata.json`` ``version`` and ``changelog``).
        torchscript: also write ``models/model.ts`` (a failure only warns).
        overwrite: replace an existing bundle folder.
        description: metadata ``description``; default generated from the run.

    Returns:
        ``out``.

    Raises:
        DataError: ``run`` is not a medkd run, its method provides no bundle spec, ``stage`` is not one of the
            method's stages, or the run lacks the checkpoint; ``out`` exists (without ``overwrite``), is not a
            bundle, or lies inside the run; or the configs would not pass medkd's trust check (a ``description``
            starting with ``$``).
        ValueError: ``checkpoint`` is neither ``best`` nor ``last``, or ``version`` is not ``MAJOR.MINOR.PATCH``.
    """
    run, out = Path(run), Path(out)
    if not _VERSION.match(version):
        raise ValueError(f"version must look like 1.2.3 (MAJOR.MINOR.PATCH), got {version!r}")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    from medkd.runs import is_run

    if not is_run(run):
        raise DataError(run, "not a medkd run folder (no run.json or config.yaml): pass the --out of a method's "
                             "'train'")
    spec = spec_of_run(run)
    spec.check_stage(stage, run)
    _check_out(out, run, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _build(work, spec, run, out, checkpoint=checkpoint, stage=stage, version=version, description=description)
        if torchscript:
            export_torchscript(work, trust=True)  # checked by _build
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            work.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    out.chmod(0o755)  # mkdtemp made it private
    logger.info("bundle written to %s (from %s)", out, run)
    return out
