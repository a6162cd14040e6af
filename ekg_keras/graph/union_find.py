"""Union-find over integer channel ids, array at a time."""

import numpy as np


class UnionFind:
    """Disjoint sets of the integers `0 .. size-1`, growable.

    A layer's channels are joined with another layer's all at once (the two
    inputs of an `Add`), so every operation takes arrays of ids; a chain of
    parents always leads to smaller ids, and the smallest id of a set is
    its root.
    """

    def __init__(self):
        self._parent = np.zeros(0, dtype=np.int64)
        self._size = 0

    def add(self, count):
        """Adds `count` new singleton ids and returns them as an array."""
        start = self._size
        if start + count > len(self._parent):
            grown = np.zeros(
                max(2 * len(self._parent), start + count), np.int64
            )
            grown[:start] = self._parent[:start]
            self._parent = grown
        ids = np.arange(start, start + count, dtype=np.int64)
        self._parent[start : start + count] = ids
        self._size = start + count
        return ids

    def find(self, items):
        """The roots of `items` (an array of ids)."""
        parent = self._parent
        items = np.asarray(items, dtype=np.int64)
        roots = parent[items]
        while True:
            above = parent[roots]
            if np.array_equal(above, roots):
                break
            roots = above
        parent[items] = roots  # Path compression.
        return roots

    def union(self, a, b):
        """Merges the set of `a[i]` with that of `b[i]` for every `i`."""
        while True:
            root_a, root_b = self.find(a), self.find(b)
            differ = root_a != root_b
            if not differ.any():
                return
            low = np.minimum(root_a[differ], root_b[differ])
            high = np.maximum(root_a[differ], root_b[differ])
            # A root named twice keeps one of its new parents; the next
            # round joins the others.
            self._parent[high] = low

    def roots(self):
        """The root of every id, as an array."""
        return self.find(np.arange(self._size, dtype=np.int64))

    def __len__(self):
        return self._size
