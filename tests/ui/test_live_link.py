"""The live link in a real browser: a node added from Python appears on the open canvas.

The test process acts as the kernel: it links a ``Flow`` to the ``.nxflow`` file that
JupyterLab has open (server found through ``NEXUSFLOW_SERVER_URL`` / ``NEXUSFLOW_SERVER_TOKEN``)
and adds a node; the page times the node's arrival on the canvas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.model.document import dumps_canonical
from tests.ui.conftest import ARTIFACTS, UI_TESTS, chromium_path

LINKED = {
    "schema": 1,
    "name": "linked",
    "nodes": [
        {"id": "A", "type": "transform", "position": {"x": 0, "y": 0},
         "config": {"expression": "1"}},
        {"id": "B", "type": "transform", "position": {"x": 0, "y": 140},
         "config": {"expression": "inputs['A'] + 1"}},
    ],
    "edges": [{"id": "A-B", "source": "A", "target": "B"}],
}


class BrowserScenario:
    """One scenario of labextension/ui-tests/notebook.mjs, running in the background."""

    def __init__(self, url: str, token: str, scenario: str, log: Path | None = None,
                 **env: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.server_log = log
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            ["node", str(UI_TESTS / "notebook.mjs"), scenario], cwd=UI_TESTS,
            env=dict(os.environ, LAB_URL=url, LAB_TOKEN=token, CHROMIUM=chromium_path() or "",
                     ARTIFACTS=str(ARTIFACTS), **env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            sys.stdout.write(line)
            if line.startswith("READY "):
                self.ready.set()
        self.ready.set()

    def _fail(self, what: str) -> None:
        tail = ""
        if self.server_log is not None and self.server_log.exists():
            tail = self.server_log.read_text(errors="replace")[-3000:]
        pytest.fail(f"browser scenario {self.scenario} {what}:\n"
                    + "\n".join(self.lines[-60:]) + f"\n--- server log tail ---\n{tail}")

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait for the page's ``READY`` line."""
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            self._fail("did not get ready")

    def result(self, timeout: float = 150) -> dict:
        """Wait for the scenario to end; return its ``RESULT``."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            self._fail(f"took over {timeout} s")
        self._reader.join(5)
        found = [json.loads(x[len("RESULT "):]) for x in self.lines if x.startswith("RESULT ")]
        if self.proc.returncode != 0 or not found:
            self._fail(f"failed (exit {self.proc.returncode})")
        return found[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_a_node_added_from_the_kernel_appears_on_the_open_canvas(lab, monkeypatch) -> None:
    path = lab.root / "linked.nxflow"
    path.write_text(dumps_canonical(LINKED))
    page = BrowserScenario(lab.url, lab.token, "live", lab.log, FLOW_FILE="linked.nxflow",
                           EXPECT_NODES="2", NEW_ID="C", EXPECT_EDGES="2")
    try:
        page.wait_ready()
        monkeypatch.setenv("NEXUSFLOW_SERVER_URL", lab.url)
        monkeypatch.setenv("NEXUSFLOW_SERVER_TOKEN", lab.token)
        monkeypatch.chdir(lab.root)
        f = nf.Flow("linked")
        link = f.link("linked.nxflow", push=False)
        f.pull()  # the canvas's graph, as open now
        assert sorted(n.id for n in f.nodes) == ["A", "B"] and link.live is True
        started = time.time() * 1000
        c = f.transform("C", "inputs['B'] * 10", label="added from the kernel",
                        position={"x": 0, "y": 280})  # sent at once: the flow is linked
        pushed = time.time() * 1000
        f["B"] >> c
        result = page.result()
    finally:
        page.stop()
    latency = result["appearedAt"] - started
    print(f"node C reached the canvas {latency:.0f} ms after the push started "
          f"(push answered after {pushed - started:.0f} ms)")
    assert result["before"] == ["A", "B"]
    assert sorted(result["after"]) == ["A", "B", "C"]
    assert result["edges"] == 2
    assert latency < 1000
    assert link.live is True
    assert result["errors"] == []

    # The room's autosave wrote the file, still canonical, with the kernel's node and edge.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"C"' not in path.read_text():
        time.sleep(0.1)
    text = path.read_text()
    saved = json.loads(text)
    assert text == dumps_canonical(saved)
    assert {n["id"] for n in saved["nodes"]} == {"A", "B", "C"}
    assert {(e["source"], e["target"]) for e in saved["edges"]} == {("A", "B"), ("B", "C")}
    node_c = next(n for n in saved["nodes"] if n["id"] == "C")
    assert node_c["label"] == "added from the kernel"
    assert node_c["position"] == {"x": 0, "y": 280}


def test_a_stale_link_merges_with_what_a_collaborator_did_meanwhile(lab, monkeypatch) -> None:
    """Load a flow, a collaborator moves a node and relabels another on the open canvas, then
    link: the move stays, our own new node arrives, and the clash is reported, not applied."""
    from nexusflow_kernel.notebook.live import LinkConflict

    path = lab.root / "merged.nxflow"
    path.write_text(dumps_canonical(LINKED))
    page = BrowserScenario(lab.url, lab.token, "live", lab.log, FLOW_FILE="merged.nxflow",
                           EXPECT_NODES="2", NEW_ID="Z", EXPECT_EDGES="1")
    try:
        page.wait_ready()  # the canvas has the file open: the document is a live room
        monkeypatch.setenv("NEXUSFLOW_SERVER_URL", lab.url)
        monkeypatch.setenv("NEXUSFLOW_SERVER_TOKEN", lab.token)
        monkeypatch.chdir(lab.root)
        stale = nf.Flow.load("merged.nxflow")  # read before the collaborator's edits
        collaborator = nf.Flow("merged")
        collaborator.link("merged.nxflow", push=False)
        collaborator.pull()
        collaborator["B"].set(position={"x": 260, "y": 200})  # each change is live at once
        collaborator["A"].set(label="theirs")
        stale["A"].set(label="ours")  # the same field: a clash
        stale.transform("Z", "2", position={"x": 0, "y": 300})  # ours alone
        with pytest.warns(LinkConflict, match="node 'A' label: here \"ours\", on the canvas "
                          "\"theirs\""):
            link = stale.link("merged.nxflow")
        result = page.result()
    finally:
        page.stop()
    # Z reached the open canvas through its room: the file was not written under it
    assert result["before"] == ["A", "B"]
    assert sorted(result["after"]) == ["A", "B", "Z"]
    assert link.live is True
    assert result["errors"] == []
    live = {n["id"]: n for n in link.pull()["nodes"]}  # the room, as every canvas shows it
    assert sorted(live) == ["A", "B", "Z"]
    assert live["B"]["position"] == {"x": 260, "y": 200}  # did not jump back
    assert live["A"]["label"] == "theirs"  # the clash was not applied
    assert live["Z"]["position"] == {"x": 0, "y": 300}
    assert stale["B"].node["position"] == {"x": 260, "y": 200}  # the kernel has the merge
