"""Job sizes on a cluster (emflow.config.cluster): the profile's `cluster` mapping, walltimes from the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emflow.config.cluster import parse_cluster
from emflow.errors import EmflowError

ROOT = Path(__file__).resolve().parents[2]


def _raw(**changes) -> dict:
    raw = {
        "gpu": {"slurm_partition": "gpu_p", "gres": "gpu:1", "cpus_per_task": 8, "mem_mb": 1000, "max_runtime": 600},
        "internet": {"slurm_partition": "net_p", "cpus_per_task": 2, "mem_mb": 500, "runtime": 60, "max_runtime": 120},
        "walltime": {
            "train": {"per_unit_min": 0.5, "floor_min": 10},
            "generate": {"per_unit_min": 0.1, "floor_min": 5},
            "judge": {"per_unit_min": 0.01, "floor_min": 3},
        },
    }
    raw.update(changes)
    return raw


def test_no_cluster_mapping_means_no_sizes():
    assert parse_cluster(None) is None


def test_values_given_as_text_by_snakemake_config_are_typed():
    # A profile's nested `config:` reaches the workflow as text (Snakemake parses --config values with YAML's
    # BaseLoader): the sizes must come out as numbers, the partition and gres as text.
    cluster = parse_cluster(_as_text(_raw()))
    assert cluster.kinds["gpu"].resources == {
        "slurm_partition": "gpu_p",
        "gres": "gpu:1",
        "cpus_per_task": 8,
        "mem_mb": 1000,
    }
    assert cluster.kinds["internet"].runtime == 60 and cluster.kinds["internet"].max_runtime == 120
    assert cluster.walltime["generate"].per_unit_min == 0.1


def _as_text(d):
    return {k: _as_text(v) if isinstance(v, dict) else str(v) for k, v in d.items()}


def test_walltime_is_units_times_per_unit_with_a_floor():
    cluster = parse_cluster(_raw())
    assert cluster.gpu_minutes("train", 100, 1) == 50  # 100 steps x 0.5 min
    assert cluster.gpu_minutes("train", 3, 1) == 10  # the floor
    assert cluster.gpu_minutes("generate", 51, 1) == 6  # whole minutes, rounded up


def test_walltime_grows_with_the_attempt_up_to_the_partition_limit():
    cluster = parse_cluster(_raw())
    assert [cluster.gpu_minutes("train", 400, a) for a in (1, 2, 3)] == [200, 400, 600]
    assert cluster.gpu_minutes("train", 400, 4) == 600  # gpu.max_runtime
    assert not cluster.capped("train", 1200) and cluster.capped("train", 1201)
    assert [cluster.kinds["internet"].fixed_minutes(a) for a in (1, 2, 3)] == [60, 120, 120]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_raw(extra={}), "extra"),
        ({k: v for k, v in _raw().items() if k != "internet"}, "internet"),
        (_raw(gpu={"slurm_partition": "p", "mem_mb": 1}), "gpu.max_runtime"),
        (_raw(gpu={"mem_mb": "lots", "max_runtime": 10}), "gpu.mem_mb"),
        (_raw(internet={"runtime": 300, "max_runtime": 240}), "internet.runtime"),
        (_raw(walltime={"train": {"per_unit_min": 1, "floor_min": 1}}), "walltime"),
        (
            _raw(walltime={r: {"per_unit_min": 0, "floor_min": 1} for r in ("train", "generate", "judge")}),
            "walltime.train.per_unit_min",
        ),
    ],
)
def test_a_bad_mapping_is_one_line_naming_the_field(raw, field):
    with pytest.raises(EmflowError) as err:
        parse_cluster(raw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("profile config `cluster`") and field in msg and "fix:" in msg


@pytest.mark.parametrize("profile", ["leonardo", "slurm-test"])
def test_shipped_cluster_profiles_parse(profile):
    raw = yaml.safe_load((ROOT / "profiles" / profile / "config.yaml").read_text())["config"]["cluster"]
    cluster = parse_cluster(_as_text(raw))
    assert cluster == parse_cluster(raw)
    for kind in cluster.kinds.values():
        assert kind.runtime is None or kind.runtime <= kind.max_runtime
