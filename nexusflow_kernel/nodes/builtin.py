"""Register the core node types: Transform, Condition, Delay, HTTP Request, Database Query, AI,
Map."""

from __future__ import annotations

from . import register
from .ai import AiNode
from .db_query import DbQueryNode
from .http import HttpNode
from .logic import ConditionNode, DelayNode, TransformNode
from .map import MapNode

CORE_TYPES = (TransformNode, ConditionNode, DelayNode, HttpNode, DbQueryNode, AiNode, MapNode)

for _node_type in CORE_TYPES:
    register(_node_type)

__all__ = ["CORE_TYPES", "AiNode", "ConditionNode", "DbQueryNode", "DelayNode", "HttpNode",
           "MapNode", "TransformNode"]
