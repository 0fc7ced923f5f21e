"""The HTML report: built from the suppressed views of a real warehouse, opened in headless Chromium."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from shredline.analytics.report import COLOURS, gather, render_html
from shredline.analytics.warehouse import Warehouse

KEY = bytes(range(32))
START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)


def fact(kind: str, day: int, i: int, tenant: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": tenant,
        "kind": kind,
        "minute": START + dt.timedelta(days=day, minutes=i),
        "channel": None,
        "direction": None,
        "workflow_id": None,
        "feature_id": None,
        "status": None,
        "duration_bucket": None,
        "length_bucket": None,
        "dedup": None,
    }
    return {**base, **fields}


def facts() -> list[dict[str, Any]]:
    out = []
    for tenant in ("acme", "gone"):
        for day in range(6):
            for i in range(20 + day * 5):
                out.append(
                    fact(
                        "MESSAGE",
                        day,
                        i,
                        tenant,
                        channel="WHATSAPP" if i % 3 else "SMS",
                        direction="INBOUND" if i % 2 else "OUTBOUND",
                    )
                )
            out += [fact("CONVERSATION_STARTED", day, i, tenant) for i in range(6)]
            # enough executions that each (workflow, feature, status) cell of a day reaches k = 5:
            # the views publish only cells of at least k, and derive rates from those alone
            for i in range(60):
                out.append(
                    fact(
                        "EXECUTION",
                        day,
                        i,
                        tenant,
                        workflow_id="order-status" if i % 2 else "faq",
                        feature_id="llm-reply" if i % 3 else "calendar",
                        status="FAILED" if i % 5 == 0 else "SUCCEEDED",
                    )
                )
    out += [fact("MESSAGE", 0, i, "tiny", channel="SMS", direction="INBOUND") for i in range(2)]
    return out


def logs() -> list[dict[str, Any]]:
    return [
        {
            "tenant": "acme",
            "minute": START,
            "workflow_id": "faq" if i % 2 else "order-status",
            "step": "respond",
            "feature_id": "llm-reply",  # lines count only where their execution cell is shown
            "status": "SUCCEEDED",
            "duration_ms": 80 + i * 37,
            "message": "sent [NAME]",
            "error": None,
        }
        for i in range(30)
    ]


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    w = Warehouse(folder / "a.duckdb", KEY)
    control = [
        {"tenant": "acme", "kind": "PROVISIONED", "occurred_at": START},
        {"tenant": "gone", "kind": "PROVISIONED", "occurred_at": START},
        {"tenant": "gone", "kind": "TERMINATED", "occurred_at": START + dt.timedelta(days=7)},
    ]
    all_facts = facts()
    w.load(all_facts, logs(), {("m", 0): len(all_facts)}, tenant_events=control)
    data = gather(w.analyst_snapshot(5))
    w.close()
    path = folder / "report.html"
    path.write_text(render_html(data, None, START + dt.timedelta(days=8), 5), encoding="utf-8")
    return path


def test_the_report_holds_every_section_and_marks_terminated_tenants(report_file: Path) -> None:
    html = report_file.read_text(encoding="utf-8")
    for heading in ("Message volume", "Channel mix", "Conversations", "Workflow success rate", "Top features"):
        assert f"<h2>{heading}" in html
    assert re.search(r"<td>gone</td><td><span class=\"terminated\">terminated</span>", html)
    assert "<td>acme</td><td>active</td>" in html
    assert len(re.findall(rf'fill="{COLOURS["inbound"]}"', html)) == 6 + 1  # a column per day, and the legend
    # nothing fetched from anywhere: no script, no external reference, and a CSP forbidding both
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "default-src 'none'" in html


def test_a_period_with_no_data_says_so(tmp_path: Path) -> None:
    w = Warehouse(tmp_path / "empty.duckdb", KEY)
    html = render_html(gather(w.analyst_snapshot(5)), dt.date(2026, 11, 1), START, 5)
    assert html.count("No data in this period") == 7  # each of the six sections and the tenants table


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def test_chromium_draws_every_chart(report_file: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--force-color-profile=srgb",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,3200",
            f"--screenshot={shot}",
            report_file.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    counts = {rgb: n for n, rgb in Image.open(shot).convert("RGB").getcolors(1 << 24) or []}
    for name, colour in COLOURS.items():
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 300, f"chart marks for {name} ({colour}) not drawn"
