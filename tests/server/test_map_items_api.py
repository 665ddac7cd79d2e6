"""REST for a map node's items (issue #20, item 1): the paged list, one item with its
attempts, filters, bad queries, and the viewer role the run itself needs."""

from __future__ import annotations

import pytest
from nftest import flow, node, wait_run


@pytest.fixture
def nf_config(nf_config):
    # As on a shared server: roles decide.
    return {**nf_config, "default_role": "none", "admin_users": ["root"]}


def map_doc() -> dict:
    return flow(node("orders", expression="[{'qty': q} for q in range(12)]"),
                node("price", "map", items="inputs['orders']", on_item_failure="continue",
                     node={"type": "transform",
                           "config": {"expression": "100 // (item['qty'] % 5)"}}),
                edges=[("orders", "price")], name="priced")


async def test_items_of_a_map_page_by_page(api, engine, workers) -> None:
    workers.start(1)
    code, wf = await api("POST", "workflows", {"graph": map_doc()}, user="alice")
    assert code == 201, wf
    code, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"]}, user="alice")
    assert code == 201, started
    run_id = started["run_id"]
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run

    code, got = await api("GET", f"runs/{run_id}", user="alice")
    assert got["nodes"]["price"]["items"] == {"total": 12, "done": 12, "running": 0,
                                              "succeeded": 9, "failed": 3, "canceled": 0}
    path = f"runs/{run_id}/nodes/price/items"
    code, page = await api("GET", path, user="alice", params={"offset": "4", "limit": "5"})
    assert code == 200, page
    assert page["total"] == 12 and page["offset"] == 4 and page["limit"] == 5
    assert page["counts"]["failed"] == 3
    assert [i["index"] for i in page["items"]] == [4, 5, 6, 7, 8]
    five = page["items"][1]
    assert five["state"] == "failed" and "ZeroDivisionError" in five["error"]
    assert five["item"] == {"qty": 5} and five["attempts"] == 1 and five["output"] is None
    assert page["items"][0] == {**page["items"][0], "state": "succeeded", "output": 25}

    code, failed = await api("GET", path, user="alice", params={"state": "failed"})
    assert code == 200 and failed["total"] == 3
    assert [i["index"] for i in failed["items"]] == [0, 5, 10]

    code, one = await api("GET", f"{path}/10", user="alice")
    assert code == 200, one
    assert one["index"] == 10 and one["state"] == "failed"
    assert [h["status"] for h in one["history"]] == ["failed"]

    # Bad queries name the parameter; unknown nodes, items and non-maps are 404.
    code, err = await api("GET", path, user="alice", params={"state": "done"})
    assert code == 400 and err["pointer"] == "?state"
    code, err = await api("GET", path, user="alice", params={"limit": "0"})
    assert code == 400 and err["pointer"] == "?limit"
    code, err = await api("GET", f"{path}/-1", user="alice")
    assert code == 400
    code, err = await api("GET", f"{path}/99", user="alice")
    assert code == 404 and "has no item 99" in err["message"]
    code, err = await api("GET", f"runs/{run_id}/nodes/orders/items", user="alice")
    assert code == 404 and "not a map" in err["message"]
    code, err = await api("GET", f"runs/{run_id}/nodes/nope/items", user="alice")
    assert code == 404

    # Another user sees nothing of the run until given the viewer role on its workflow.
    code, _ = await api("GET", path, user="carol")
    assert code == 404
    code, _ = await api("GET", f"{path}/0", user="carol")
    assert code == 404
    code, _ = await api("PUT", f"workflows/{wf['workflow_id']}/roles/carol",
                        {"role": "viewer"}, user="alice")
    assert code == 200
    code, page = await api("GET", path, user="carol", params={"limit": "2"})
    assert code == 200 and [i["index"] for i in page["items"]] == [0, 1]


def test_a_notebook_reads_items_through_the_service(service, tokens, keyed, workers,
                                                     tmp_path) -> None:
    from nexusflow_kernel import Flow
    from nexusflow_kernel.errors import NotFoundError
    from nexusflow_kernel.remote import RemoteEngine
    from nexusflow_kernel.settings import Settings

    remote = Settings(service_url=service.url, service_token=tokens("alice"),
                      data_dir=tmp_path / "none")
    workers.start(1)
    f = Flow("remote-map")
    f.map("m", over="list(range(7))", do="10 // (item - 3)", on_item_failure="continue")
    run = f.run(settings=remote, timeout=60, progress=False)
    assert isinstance(run.engine, RemoteEngine)
    page = run.items("m", offset=2, limit=3)
    assert [i["index"] for i in page] == [2, 3, 4] and page.total == 7
    assert page[1]["state"] == "failed" and "ZeroDivisionError" in page[1]["error"]
    assert page.counts == {"total": 7, "done": 7, "running": 0, "succeeded": 6, "failed": 1,
                           "canceled": 0}
    assert [i["index"] for i in page.next()] == [5, 6]
    assert [i["index"] for i in run.items("m", state="failed")] == [3]
    assert run.item("m", 4)["output"] == 10
    with pytest.raises(NotFoundError, match="no item 70"):
        run.item("m", 70)
