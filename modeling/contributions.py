"""Additive contributions of a model's input groups to its margin (the log-odds before the logistic link).

A deal's margin is explained against one reference record (the training baselines): for every group of
input columns g (a fact), phi_g is its Shapley value in the game where a coalition S of facts takes the
deal's values and the others the reference's. So `margin(x) = margin(reference) + sum_g phi_g`, exactly:
- logistic regression: phi_g = sum over g's columns of w_c * (x_c - r_c) (the game is additive);
- tree ensembles: interventional TreeSHAP with a single reference, exact. In one tree a leaf is reached
  by a mix of x and r iff every node on its path is passed by x's or r's value of its fact; with A the
  facts only x passes and B those only r passes, the leaf (value v) adds v * (|A|-1)! |B|! / (|A|+|B|)!
  to each fact of A and -v * |A|! (|B|-1)! / (|A|+|B|)! to each fact of B (Lundberg et al. 2020, the
  "baseline Shapley" of one reference). The leaves are found by walking x and r down every tree at
  once, vectorised over (row, tree) entries that split in two where x and r part ways on a fact not
  yet decided; each entry carries its A and B as bit sets.

`same[i, g]` makes the reference equal to the deal for fact g on row i (a per-stage model does not
apply g in that row's stage: its contribution is 0). Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

CHUNK_ROWS = 8192  # rows walked at once (bounds the entry arrays at CHUNK_ROWS x trees x a few)
_FACT = np.array([math.factorial(k) for k in range(171)], dtype=float)


@dataclass(frozen=True)
class Linear:
    """A LinearClassifier's class-1 margin: x @ weights + intercept."""

    weights: np.ndarray
    intercept: float


@dataclass(frozen=True)
class Trees:
    """A TreeEnsembleClassifier of "x <= t" nodes in one global node array (every tree's nodes), margin =
    base + the sum of the leaves x reaches. Leaves have feature -1."""

    feature: np.ndarray  # int64 input column per node (-1: leaf)
    threshold: np.ndarray  # float32
    true_next: np.ndarray  # global index of the "x <= t" child
    false_next: np.ndarray
    missing_true: np.ndarray  # bool: NaN goes to the true child
    value: np.ndarray  # float64 leaf value (0 on branch nodes)
    roots: np.ndarray  # global index of each tree's root
    base: float


Part = Linear | Trees


def read_model(node: Any) -> Part | None:
    """The margin part of an ONNX LinearClassifier / TreeEnsembleClassifier node with a LOGISTIC
    post-transform and two classes, or None for any other shape."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    post = attrs.get("post_transform", b"NONE")
    if (post.decode() if isinstance(post, bytes) else str(post)) != "LOGISTIC":
        return None
    if node.op_type == "LinearClassifier":
        coef = np.asarray(attrs.get("coefficients", []), dtype=float)
        intercepts = np.asarray(attrs.get("intercepts", []), dtype=float)
        if len(intercepts) != 2 or len(coef) % 2:
            return None
        return Linear(coef[len(coef) // 2 :], float(intercepts[1]))
    if node.op_type == "TreeEnsembleClassifier":
        return _read_trees(attrs)
    return None


def _read_trees(attrs: dict[str, Any]) -> Trees | None:
    modes = [m.decode() if isinstance(m, bytes) else str(m) for m in attrs.get("nodes_modes", [])]
    if not modes or not set(modes) <= {"BRANCH_LEQ", "LEAF"} or set(attrs.get("class_ids", [])) != {0}:
        return None
    tree = np.asarray(attrs["nodes_treeids"], dtype=np.int64)
    local = np.asarray(attrs["nodes_nodeids"], dtype=np.int64)
    width = int(local.max()) + 1
    at = np.full((int(tree.max()) + 1) * width, -1, dtype=np.int64)  # (tree, local id) -> global index
    at[tree * width + local] = np.arange(len(tree))
    leaf = np.array([m == "LEAF" for m in modes])
    true_next = np.where(leaf, 0, at[tree * width + np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)])
    false_next = np.where(leaf, 0, at[tree * width + np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)])
    value = np.zeros(len(tree))
    c_tree = np.asarray(attrs["class_treeids"], dtype=np.int64)
    c_node = np.asarray(attrs["class_nodeids"], dtype=np.int64)
    np.add.at(value, at[c_tree * width + c_node], np.asarray(attrs["class_weights"], dtype=float))
    roots = np.array([at[t * width] for t in np.unique(tree)], dtype=np.int64)
    if (roots < 0).any() or (true_next < 0).any() or (false_next < 0).any():
        return None
    missing = np.asarray(attrs.get("nodes_missing_value_tracks_true", [0] * len(tree)), dtype=bool)
    return Trees(
        feature=np.where(leaf, -1, np.asarray(attrs["nodes_featureids"], dtype=np.int64)),
        threshold=np.asarray(attrs["nodes_values"], dtype=np.float32),
        true_next=true_next,
        false_next=false_next,
        missing_true=missing,
        value=value,
        roots=roots,
        base=float(np.sum(attrs.get("base_values", [0.0]))),
    )


def contributions(
    part: Part,
    x: np.ndarray,
    reference: np.ndarray,
    column_group: Sequence[int] | np.ndarray,
    n_groups: int,
    same: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi [n, n_groups], margin of x [n], margin of the reference [n]) for the rows of `x` (float32
    [n, columns]); `column_group[c]` = the fact of input column c (-1: none; such a column must not
    differ from the reference). phi.sum(1) == margin(x) - margin(reference) up to float rounding."""
    groups = np.asarray(column_group, dtype=np.int64)
    if isinstance(part, Linear):
        return _linear(part, x, reference, groups, n_groups, same)
    n = len(x)
    phi = np.zeros((n, n_groups))
    mx, mr = np.full(n, part.base), np.full(n, part.base)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        sub_same = None if same is None else same[start:stop]
        _trees(part, x[start:stop], reference, groups, sub_same, phi[start:stop], mx[start:stop], mr[start:stop])
    return phi, mx, mr


def _linear(
    part: Linear, x: np.ndarray, reference: np.ndarray, groups: np.ndarray, n_groups: int, same: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    delta = (x.astype(float) - reference.astype(float)[None, :]) * part.weights[None, :]
    member = np.zeros((len(groups), n_groups))
    has = groups >= 0
    member[np.flatnonzero(has), groups[has]] = 1.0
    phi = delta @ member
    if same is not None:
        phi = np.where(same, 0.0, phi)
    mx = x.astype(float) @ part.weights + part.intercept
    return phi, mx, mx - phi.sum(axis=1)


def _goes_true(value: np.ndarray, node: np.ndarray, t: Trees) -> np.ndarray:
    return np.where(np.isnan(value), t.missing_true[node], value <= t.threshold[node])


def _trees(
    t: Trees,
    x: np.ndarray,
    reference: np.ndarray,
    groups: np.ndarray,
    same: np.ndarray | None,
    phi: np.ndarray,
    mx: np.ndarray,
    mr: np.ndarray,
) -> None:
    """Walks the rows of one chunk down every tree (see the module docstring); adds into phi, mx, mr."""
    n, n_groups = phi.shape
    node_group = np.where(t.feature >= 0, groups[np.maximum(t.feature, 0)], -1)
    words = max((n_groups + 63) // 64, 1)
    word = np.maximum(node_group, 0) // 64
    bit = np.left_shift(np.uint64(1), (np.maximum(node_group, 0) % 64).astype(np.uint64))
    ref_true = _goes_true(reference[np.maximum(t.feature, 0)].astype(np.float32), np.arange(len(t.feature)), t)
    rows = np.repeat(np.arange(n, dtype=np.int64), len(t.roots))
    node = np.tile(t.roots, n)
    a = np.zeros((len(rows), words), dtype=np.uint64)
    b = np.zeros((len(rows), words), dtype=np.uint64)
    done: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    while len(rows):
        leaf = t.feature[node] < 0
        if leaf.any():
            done.append((rows[leaf], node[leaf], a[leaf], b[leaf]))
            keep = ~leaf
            rows, node, a, b = rows[keep], node[keep], a[keep], b[keep]
            if not len(rows):
                break
        xd = _goes_true(x[rows, t.feature[node]], node, t)
        rd = ref_true[node]
        if same is not None:
            rd = np.where(same[rows, node_group[node]], xd, rd)
        e = np.arange(len(rows))
        w, m = word[node], bit[node]
        in_a, in_b = (a[e, w] & m) != 0, (b[e, w] & m) != 0
        split = np.flatnonzero((xd != rd) & ~in_a & ~in_b)
        go = np.where(in_b, rd, xd)
        if len(split):  # x's side keeps the entry (its fact joins A); r's side is a new entry (joins B)
            ws, ms = w[split], m[split]
            new_a, new_b = a[split], b[split]  # copies (fancy indexing)
            new_b[np.arange(len(split)), ws] |= ms
            a[split, ws] |= ms
            rows = np.concatenate([rows, rows[split]])
            node = np.concatenate([node, node[split]])
            go = np.concatenate([go, rd[split]])
            a, b = np.concatenate([a, new_a]), np.concatenate([b, new_b])
        node = np.where(go, t.true_next[node], t.false_next[node])
    if done:
        rows_d, node_d, a_d, b_d = (np.concatenate(c) for c in zip(*done, strict=True))
        _leaves(t, rows_d, node_d, a_d, b_d, phi, mx, mr)


def _leaves(
    t: Trees, rows: np.ndarray, node: np.ndarray, a: np.ndarray, b: np.ndarray,
    phi: np.ndarray, mx: np.ndarray, mr: np.ndarray,
) -> None:  # fmt: skip
    n, n_groups = phi.shape
    v = t.value[node]
    na = np.bitwise_count(a).sum(axis=1).astype(np.int64)
    nb = np.bitwise_count(b).sum(axis=1).astype(np.int64)
    mx += np.bincount(rows[nb == 0], weights=v[nb == 0], minlength=n)  # x's own path: no fact from r
    mr += np.bincount(rows[na == 0], weights=v[na == 0], minlength=n)
    mixed = (na + nb) > 0
    rows, v, na, nb, a, b = rows[mixed], v[mixed], na[mixed], nb[mixed], a[mixed], b[mixed]
    total = _FACT[na + nb]
    w_a = v * _FACT[np.maximum(na - 1, 0)] * _FACT[nb] / total
    w_b = -v * _FACT[na] * _FACT[np.maximum(nb - 1, 0)] / total
    flat = np.zeros(n * n_groups)
    for bits, weight in ((a, w_a), (b, w_b)):
        member = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :n_groups]
        e, g = np.nonzero(member)
        flat += np.bincount(rows[e] * n_groups + g, weights=weight[e], minlength=n * n_groups)
    phi += flat.reshape(n, n_groups)
