"""The notebook API with node packages installed (pip, into a folder on ``PYTHONPATH``): a
package's type is added and run like a built-in one; a broken package's type is refused with
its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from nftest import with_node_packages

SCRIPT = textwrap.dedent("""
    from nexusflow_kernel import Flow
    from nexusflow_kernel.errors import UnknownNodeTypeError

    f = Flow("packages")
    a = f.transform("A", "'Héllo, World!'")
    s = f.node("text.slugify", "S", text="{{ inputs['A'] }}")
    a >> s
    print(sorted(n["type"] for n in f.to_dict()["nodes"]))
    try:
        f.node("broken.bad_schema", "B")
    except UnknownNodeTypeError as exc:
        print("refused:", exc)
""")


def test_a_package_type_in_a_notebook_flow_and_a_broken_one_refused():
    env = with_node_packages(dict(os.environ))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['text.slugify', 'transform']"
    assert lines[1].startswith(
        "refused: flow: node 'B': type 'broken.bad_schema' comes from a "
        "broken package (nexusflow-broken-nodes 0.0.1: config_schema "
        "is not a valid JSON Schema at /properties/n/type"
    )
