"""A process-wide cache of built graphs, so arms, seeds and trials that train on
the same structures compute their neighbour lists and descriptors once.

Keyed by the geometry (numbers, positions, cell, pbc), the cut-off, the
species order, the descriptor set and the dtype; bounded in bytes (least
recently used first out). ``EIP2NN_GRAPH_CACHE_MB`` sets the bound (default
2048 MiB; 0 turns the cache off). Graphs are never modified after building, so
the cached objects are shared.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import fields

import torch
from ase import Atoms

from eip2nn.nn.graph import AtomicGraph

CACHE_MB_ENV = "EIP2NN_GRAPH_CACHE_MB"


def graph_bytes(graph: AtomicGraph) -> int:
    return sum(v.element_size() * v.nelement() for f in fields(graph)
               if isinstance(v := getattr(graph, f.name), torch.Tensor))


def geometry_key(atoms: Atoms) -> str:
    h = hashlib.sha1()
    for part in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
        h.update(part.tobytes())
    return h.hexdigest()


class GraphCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[AtomicGraph, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple) -> AtomicGraph | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple, graph: AtomicGraph) -> None:
        size = graph_bytes(graph)
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = (graph, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= old


CACHE = GraphCache(int(float(os.environ.get(CACHE_MB_ENV, "2048")) * 2**20))
