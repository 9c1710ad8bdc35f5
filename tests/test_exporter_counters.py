"""`--collect FILE`: dcgm-exporter's counters CSV, with errors that name the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.errors import ConfigError
from kgpu.exporter import DEFAULT_COUNTERS_CSV, load_counters, parse_counters

# dcgm-exporter's etc/default-counters.csv as its users have it (layout, commented lines, odd spacing).
DCGM_EXPORTER_DEFAULT = """\
# Format
# If line starts with a '#' it is considered a comment
# DCGM FIELD, Prometheus metric type, help message

# Clocks
DCGM_FI_DEV_SM_CLOCK,  gauge, SM clock frequency (in MHz).
DCGM_FI_DEV_MEM_CLOCK, gauge, Memory clock frequency (in MHz).
# PCIE
DCGM_FI_DEV_PCIE_TX_THROUGHPUT,  counter, Total number of bytes transmitted through PCIe TX (in KB) via NVML.
DCGM_FI_DEV_PCIE_REPLAY_COUNTER, counter, Total number of PCIe retries.
DCGM_FI_DEV_DEC_UTIL ,     gauge, Decoder utilization (in %).
# DCGM_FI_DEV_POWER_VIOLATION,       counter, Throttling duration due to power constraints (in us).
DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL,            counter, Total number of NVLink bandwidth counters for all lanes
DCGM_FI_DEV_ROW_REMAP_FAILURE,           gauge,   Whether remapping of rows has failed
DCGM_FI_DRIVER_VERSION,        label, Driver Version
"""


def test_a_dcgm_exporter_counters_file_works_unchanged() -> None:
    counters = parse_counters(DCGM_EXPORTER_DEFAULT, "default-counters.csv")
    assert [c.field for c in counters.metrics] == [
        "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    ]
    assert counters.metrics[2].prom_type == "counter"
    assert counters.metrics[2].help == "Total number of PCIe retries."
    assert [c.field for c in counters.labels] == ["DCGM_FI_DRIVER_VERSION"]
    # Fields that need DCGM itself are skipped, each named with its line.
    assert counters.skipped == ("default-counters.csv:9 DCGM_FI_DEV_PCIE_TX_THROUGHPUT",)


def test_the_built_in_list_covers_every_field_kgpu_reads() -> None:
    from kgpu.exporter.fields import FIELDS

    counters = parse_counters(DEFAULT_COUNTERS_CSV, "built-in")
    assert {c.field for c in counters.metrics} == set(FIELDS)
    assert counters.skipped == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("DCGM_FI_DEV_GPU_TEMPERATURE, gauge, typo", "mine.csv:3: unknown field 'DCGM_FI_DEV_GPU_TEMPERATURE'"),
        ("DCGM_FI_DEV_GPU_TEMP, histogramm, x", "mine.csv:3: DCGM_FI_DEV_GPU_TEMP: metric type 'histogramm' is not "
                                                "one of gauge, counter, label"),
        ("DCGM_FI_DEV_GPU_TEMP, gauge", "mine.csv:3: expected 3 fields"),
        ("DCGM_FI_DEV_GPU_TEMP, gauge, temperature, in C", "mine.csv:3: expected 3 fields"),
        ("DCGM_FI_DEV_SM_CLOCK, gauge, again", "mine.csv:3: DCGM_FI_DEV_SM_CLOCK is already listed on line 2"),
        ("DCGM_FI_DRIVER_VERSION, gauge, x", "mine.csv:3: DCGM_FI_DRIVER_VERSION can only be published as a label"),
    ],
)
def test_bad_lines_name_the_file_line_and_field(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_counters(f"# mine\nDCGM_FI_DEV_SM_CLOCK, gauge, x\n{line}\n", "mine.csv")
    assert message in str(err.value)


def test_a_help_text_with_commas_can_be_quoted() -> None:
    counters = parse_counters('DCGM_FI_DEV_GPU_TEMP, gauge, "GPU temperature, in C."\n', "q.csv")
    assert counters.metrics[0].help == "GPU temperature, in C."


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read --collect .*nope\.csv: No such file or directory"):
        load_counters(tmp_path / "nope.csv")


def test_a_file_with_only_dcgm_only_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prof.csv"
    path.write_text("DCGM_FI_PROF_SM_ACTIVE, gauge, sm active\n")
    with pytest.raises(ConfigError, match="lists no field kgpu can publish"):
        load_counters(path)


def test_the_cli_reports_a_bad_counters_file_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("DCGM_FI_DEV_GPU_TEMP, gauge, ok\nDCGM_FI_DEV_NOPE, gauge, nope\n")
    result = CliRunner().invoke(app, ["--simulate", "t4", "exporter", "--once", "--collect", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert f"{path}:2: unknown field 'DCGM_FI_DEV_NOPE'" in str(result.exception)


def test_print_default_counters_round_trips() -> None:
    result = CliRunner().invoke(app, ["exporter", "--print-default-counters"])
    assert result.exit_code == 0
    assert parse_counters(result.stdout, "printed") == parse_counters(DEFAULT_COUNTERS_CSV, "printed")
