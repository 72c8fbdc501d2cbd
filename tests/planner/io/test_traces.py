"""The one trace reader: what it loads, its errors, its buckets, and every consumer reading through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.io.traces import bucket, bucket_trace, load_trace, service_traces, trace_path
from planner.replay import Arrivals
from planner.schema import SLO, FleetSpec, LengthBucket, Pool, Service, Traffic
from power.sim import load_azure_trace

ROWS = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.5000000,100,10
2023-11-16 18:15:46.0000000,300,0
2023-11-16 18:15:48.2500000,3000,200
2023-11-16 18:15:50.0000000,120,12
"""


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_trace_keeps_file_order_and_counts_seconds_from_the_earliest(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, ROWS))
    assert len(trace) == 4 and trace.source.endswith("t.csv")
    assert trace.arrival_s is not None
    assert trace.arrival_s.tolist() == pytest.approx([0.5, 0.0, 2.25, 4.0])
    assert trace.input_tokens.tolist() == [100, 300, 3000, 120]
    assert trace.output_tokens.tolist() == [10, 0, 200, 12]  # as written: consumers decide about zeros


def test_load_trace_without_timestamps(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, "ContextTokens,GeneratedTokens\n5,6\n7,8\n"))
    assert trace.arrival_s is None and trace.input_tokens.tolist() == [5, 7]
    assert bucket(trace).mean_rate_rps is None


@pytest.mark.parametrize(("text", "message"), [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,5\n", "t.csv:1: GeneratedTokens: missing column"),
    ("ContextTokens,GeneratedTokens\n5,6\n7,x\n", "t.csv:3: GeneratedTokens: not an integer"),
    ("ContextTokens,GeneratedTokens\nfive,6\n", "t.csv:2: ContextTokens: not an integer"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5,6\nyesterday,5,6\n",
     "t.csv:3: TIMESTAMP: not a timestamp"),
])
def test_bad_files_name_the_line_and_the_column(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_trace(write(tmp_path, text))


def test_buckets_skip_empty_lengths_and_rate_spans_the_kept_requests(tmp_path: Path) -> None:
    summary = bucket_trace(write(tmp_path, ROWS), input_edges=(0, 128, 4096), output_edges=(0, 16, 256))
    # the 300/0 row carries no load; 100/10 and 120/12 share a cell, 3000/200 is alone
    assert summary.requests == 3
    assert [(b.input_tokens, b.output_tokens) for b in summary.buckets] == [(110, 11), (3000, 200)]
    assert [b.share for b in summary.buckets] == pytest.approx([2 / 3, 1 / 3])
    assert summary.mean_rate_rps == pytest.approx(3 / 3.5)  # from 0.5 s to 4.0 s


def test_replay_and_power_read_through_the_same_reader(tmp_path: Path) -> None:
    path = write(tmp_path, ROWS)
    trace = load_trace(path)
    arrivals = Arrivals.from_trace(trace)  # arrival order, lengths of at least one token
    assert arrivals.arrival_s.tolist() == pytest.approx([0.0, 0.5, 2.25, 4.0])
    assert arrivals.input_tokens.tolist() == [300, 100, 3000, 120]
    assert arrivals.output_tokens.tolist() == [1, 10, 200, 12]
    t, prompt, output = load_azure_trace(path)
    assert np.array_equal(t, trace.arrival_s) and prompt.tolist() == [100, 300, 3000, 120]
    assert output.tolist() == [10, 0, 200, 12]


def test_service_traces_resolve_relative_paths_against_the_fleet_folder(tmp_path: Path) -> None:
    write(tmp_path, ROWS)
    svc = Service(id="chat", model="llama-2-7b", slo=SLO(ttft_ms=500, tpot_ms=80),
                  traffic=Traffic(rate_rps=1.0, trace_file="t.csv"))
    other = Service(id="code", model="llama-2-7b", slo=SLO(ttft_ms=500, tpot_ms=80),
                    traffic=Traffic(rate_rps=1.0, buckets=[LengthBucket(input_tokens=5, output_tokens=5, share=1)]))
    fleet = FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=1)], services=[svc, other])
    loaded = service_traces(fleet, tmp_path)
    assert list(loaded) == ["chat"] and len(loaded["chat"]) == 4
    assert trace_path("/abs/t.csv", tmp_path) == Path("/abs/t.csv")


@pytest.mark.parametrize(("text", "message"), [
    ("", "t.csv:1: \\(file\\): empty"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "t.csv:2: \\(file\\): no requests after the header"),
    ("ContextTokens,GeneratedTokens\n5,6\n-3,8\n", "t.csv:3: ContextTokens: must not be negative"),
    ("ContextTokens,GeneratedTokens\n5,99999999999\n", "t.csv:2: GeneratedTokens: 99999999999 tokens is more than"),
    ("ContextTokens,GeneratedTokens\n5\n", "t.csv:2: GeneratedTokens: not an integer"),
])
def test_empty_negative_and_huge_rows_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_trace(write(tmp_path, text))


def test_a_trace_over_the_row_limit_is_refused(tmp_path: Path) -> None:
    from planner.io.traces import parse_trace

    with pytest.raises(ValueError, match="t.csv:4: \\(file\\): more than 2 requests"):
        parse_trace("ContextTokens,GeneratedTokens\n1,1\n1,1\n1,1\n", "t.csv", max_rows=2)
