# SPDX-License-Identifier: Apache-2.0
"""run.json: what method and kind wrote a run folder; legacy BCP folders still read."""

from __future__ import annotations

import json

import pytest

from medkd.errors import DataError
from medkd.runs import LEGACY_METHOD, RUN_INFO, is_run, read_run_info, write_run_info


def test_written_run_info_reads_back_with_the_version(tmp_path):
    import medkd

    write_run_info(tmp_path, method="toy", kind="detection", seed=3)
    assert read_run_info(tmp_path) == {"method": "toy", "kind": "detection", "medkd": medkd.__version__, "seed": 3}
    assert is_run(tmp_path)


def test_legacy_folder_with_config_yaml_is_a_bcp_run(tmp_path):
    (tmp_path / "config.yaml").write_text("dataset: acdc\n")
    assert read_run_info(tmp_path) == LEGACY_METHOD and is_run(tmp_path)


@pytest.mark.parametrize("text, problem", [("{", "not valid JSON"), ("[1]", "JSON object"),
                                           (json.dumps({"method": "bcp"}), "'kind'")])
def test_bad_run_info_names_the_file(tmp_path, text, problem):
    (tmp_path / RUN_INFO).write_text(text)
    with pytest.raises(DataError, match=problem) as err:
        read_run_info(tmp_path)
    assert str(tmp_path / RUN_INFO) in str(err.value)


def test_a_folder_that_is_no_run(tmp_path):
    assert not is_run(tmp_path)
    with pytest.raises(DataError, match="not a medkd run folder"):
        read_run_info(tmp_path)
