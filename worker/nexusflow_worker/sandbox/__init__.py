"""The code sandbox: hardened Docker containers (and weaker policies) for user code.

Importing this package never imports the Docker SDK; it is loaded on first use, so the node
registry can import ``nexusflow_worker.sandbox.node`` in every process.
"""

from .client import engine_error
from .image import BuildResult, build_image, image_exists, image_tag
from .isolation import POLICIES, effective_policy, run_isolated
from .node import CodeNode
from .protocol import Limits
from .runner import container_options, run_code, sweep_orphans

__all__ = [
    "POLICIES",
    "BuildResult",
    "CodeNode",
    "Limits",
    "build_image",
    "container_options",
    "effective_policy",
    "engine_error",
    "image_exists",
    "image_tag",
    "run_code",
    "run_isolated",
    "sweep_orphans",
]
