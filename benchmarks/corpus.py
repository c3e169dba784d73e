"""A real English text corpus that ships with every install here, and queries judged by
construction: the docstrings of the Python standard library and of the installed packages.

A docstring's first paragraph is its summary ("Return the indices of the maximum values
along an axis."); the rest, split into paragraphs of at least ``MIN_WORDS`` words, are the
documents. A query is a summary, and its relevant documents are the paragraphs of the same
docstring: the task a developer runs when they look for the function that does X. Duplicate
paragraphs (inherited and copied docstrings) are kept once, and a summary that appears in
two docstrings is not a query (its judgments would be ambiguous)."""

from __future__ import annotations

import ast
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

MIN_WORDS = 8


@dataclass(frozen=True)
class Corpus:
    documents: list[str]  # the paragraphs
    queries: list[str]  # summaries
    relevant: list[frozenset[int]]  # per query, the indices of its documents


def _docstrings(roots: list[Path]) -> list[str]:
    out = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if {"test", "tests"} & set(path.relative_to(root).parts):
                continue
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    doc = ast.get_docstring(node)
                    if doc:
                        out.append(doc)
    return out


def build(max_documents: int, seed: int = 0) -> Corpus:
    paths = sysconfig.get_paths()
    roots = [Path(paths["stdlib"]), Path(paths["purelib"])]
    summaries: dict[str, int] = {}
    parsed = []
    for doc in _docstrings(roots):
        head, _, body = doc.partition("\n\n")
        summary = " ".join(head.split())
        paragraphs = [" ".join(p.split()) for p in body.split("\n\n")]
        paragraphs = [p for p in paragraphs if len(p.split()) >= MIN_WORDS]
        if len(summary.split()) >= 4 and paragraphs:
            summaries[summary] = summaries.get(summary, 0) + 1
            parsed.append((summary, paragraphs))
    random.Random(seed).shuffle(parsed)
    documents: list[str] = []
    index: dict[str, int] = {}
    queries, relevant = [], []
    for summary, paragraphs in parsed:
        if len(documents) >= max_documents:
            break
        ids = set()
        for p in paragraphs:
            if p not in index:
                index[p] = len(documents)
                documents.append(p)
            ids.add(index[p])
        if summaries[summary] == 1:
            queries.append(summary)
            relevant.append(frozenset(ids))
    return Corpus(documents[:max_documents], queries,
                  [frozenset(i for i in r if i < max_documents) for r in relevant])
