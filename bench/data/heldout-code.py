# A held-out code text for perplexity comparisons: written for this repository (not taken from any corpus), so
# no checkpoint has seen it. Plain Python: a small interval tree, an LRU cache and a tokenizer of arithmetic.
from dataclasses import dataclass, field
from typing import Iterator, Optional


@dataclass
class Interval:
    start: int
    end: int
    label: str = ""

    def overlaps(self, other: "Interval") -> bool:
        return self.start < other.end and other.start < self.end

    def length(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class Node:
    interval: Interval
    max_end: int
    left: Optional["Node"] = None
    right: Optional["Node"] = None


class IntervalTree:
    def __init__(self) -> None:
        self.root: Optional[Node] = None
        self.size = 0

    def insert(self, interval: Interval) -> None:
        self.root = self._insert(self.root, interval)
        self.size += 1

    def _insert(self, node: Optional[Node], interval: Interval) -> Node:
        if node is None:
            return Node(interval, interval.end)
        if interval.start < node.interval.start:
            node.left = self._insert(node.left, interval)
        else:
            node.right = self._insert(node.right, interval)
        node.max_end = max(node.max_end, interval.end)
        return node

    def overlapping(self, query: Interval) -> Iterator[Interval]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node is None or node.max_end <= query.start:
                continue
            if node.interval.overlaps(query):
                yield node.interval
            stack.append(node.left)
            if node.interval.start < query.end:
                stack.append(node.right)


class LRUCache:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.items: dict[str, int] = {}

    def get(self, key: str) -> Optional[int]:
        if key not in self.items:
            return None
        value = self.items.pop(key)
        self.items[key] = value
        return value

    def put(self, key: str, value: int) -> None:
        if key in self.items:
            self.items.pop(key)
        elif len(self.items) >= self.capacity:
            oldest = next(iter(self.items))
            del self.items[oldest]
        self.items[key] = value


@dataclass
class Token:
    kind: str
    text: str
    position: int = field(default=0)


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit():
            j = i
            while j < len(source) and source[j].isdigit():
                j += 1
            tokens.append(Token("number", source[i:j], i))
            i = j
        elif ch in "+-*/()":
            tokens.append(Token("op", ch, i))
            i += 1
        else:
            raise SyntaxError(f"unexpected {ch!r} at {i}")
    return tokens
