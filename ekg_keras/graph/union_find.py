"""Union-find over integer channel ids."""

import numpy as np


class UnionFind:
    """Disjoint sets of the integers `0 .. size-1`, growable."""

    def __init__(self):
        self._parent = []

    def add(self, count):
        """Adds `count` new singleton ids and returns them as an array."""
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, item):
        """The representative of `item`'s set."""
        parent = self._parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def union(self, a, b):
        """Merges the sets of `a` and `b`; the smaller id becomes the root."""
        root_a, root_b = self.find(int(a)), self.find(int(b))
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            self._parent[high] = low

    def roots(self):
        """The representative of every id, as an array."""
        return np.array(
            [self.find(i) for i in range(len(self._parent))], dtype=np.int64
        )

    def __len__(self):
        return len(self._parent)
