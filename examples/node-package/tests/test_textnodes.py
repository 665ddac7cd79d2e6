"""The package's own tests: each node type run directly, and the types as Nexus-Flow loads them.

Run them with the package installed (``pip install -e ".[test]" && pytest``): the last tests
read the installed entry points, as the workers and the server do.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from nexusflow_textnodes import CsvParseNode, SlugifyNode
from nexusflow_textnodes.nodes import slugify

from nexusflow_kernel.errors import NodeExecutionError
from nexusflow_kernel.nodes import NodeContext, get_node_type, node_source
from nexusflow_kernel.nodes.plugins import check_node_type
from nexusflow_kernel.settings import Settings


def ctx(config: dict, node_id: str = "N") -> NodeContext:
    return NodeContext(
        run_id="r",
        node_id=node_id,
        attempt=1,
        config=config,
        inputs={},
        params={},
        settings=Settings.from_env(),
    )


@pytest.mark.parametrize(
    ("text", "kwargs", "slug"),
    [
        ("Héllo, World!", {}, "hello-world"),
        ("  Crème brûlée  à la carte ", {"separator": "_"}, "creme_brulee_a_la_carte"),
        ("Keep Case", {"lowercase": False}, "Keep-Case"),
        ("one two three four", {"max_length": 8}, "one-two"),
        ("!!!", {}, ""),
    ],
)
def test_slugify(text, kwargs, slug):
    assert slugify(text, **kwargs) == slug


def test_slugify_node_output_and_log():
    c = ctx({"text": "Quarterly Report: Q3 2026", "max_length": 80})
    assert SlugifyNode().run(c) == "quarterly-report-q3-2026"
    assert "-> 'quarterly-report-q3-2026'" in c.log.text()


def test_csv_with_header():
    out = CsvParseNode().run(ctx({"text": 'name,qty\nwidget,3\n"gadget, large",5\n'}))
    assert out == {
        "rows": [{"name": "widget", "qty": "3"}, {"name": "gadget, large", "qty": "5"}],
        "columns": ["name", "qty"],
        "count": 2,
    }


def test_csv_without_header_and_delimiter():
    out = CsvParseNode().run(ctx({"text": "a;b\nc;d;e\n", "header": False, "delimiter": ";"}))
    assert out == {"rows": [["a", "b"], ["c", "d", "e"]], "columns": [0, 1, 2], "count": 2}


def test_csv_ragged_row_is_named():
    with pytest.raises(NodeExecutionError, match=r"node 'P': CSV row 3 has 1 fields"):
        CsvParseNode().run(ctx({"text": "a,b\n1,2\n3\n"}, node_id="P"))
    loose = CsvParseNode().run(ctx({"text": "a,b\n1,2\n3\n", "strict": False}))
    assert loose["rows"][1] == {"a": "3", "b": ""}


def test_csv_row_limit():
    with pytest.raises(NodeExecutionError, match="more than 2 rows"):
        CsvParseNode().run(ctx({"text": "h\n1\n2\n3\n", "max_rows": 2}))


def test_csv_delimiter_check():
    assert CsvParseNode().check_config({"text": "", "delimiter": '"'}) == [
        ("/delimiter", "'\"' cannot separate CSV fields")
    ]


@pytest.mark.parametrize("cls", [SlugifyNode, CsvParseNode])
def test_types_keep_the_contract(cls):
    _, entry = check_node_type(cls, cls.name)
    assert entry["category"] == "text" and entry["icon"] and entry["docs_url"]


def test_installed_types_are_registered_from_this_package():
    for name, cls in (("text.slugify", SlugifyNode), ("text.csv_parse", CsvParseNode)):
        assert type(get_node_type(name)) is cls
        source = node_source(name)
        assert source is not None and source.package == "nexusflow-text-nodes"


def test_nodes_list_shows_the_package():
    out = subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", "nodes", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    listed = {t["type"]: t for t in data["node_types"]}
    assert listed["text.slugify"]["package"] == "nexusflow-text-nodes"
    assert listed["text.csv_parse"]["version"] == "0.1.0"
    assert [b for b in data["broken"] if b["package"] == "nexusflow-text-nodes"] == []
