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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper


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
    _trees(part, x, reference, groups, same, phi, mx, mr)
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


_KERNEL: list[Any] = []
prange = range  # numba.prange once the kernel is compiled (`_kernel`), which reads it from this module


def _kernel() -> Any:
    """The compiled walk: numba is imported and the kernel compiled (or loaded from numba's cache) on first
    use, so a cold start that never explains a score does not pay for it."""
    global prange
    if not _KERNEL:
        import numba

        prange = numba.prange
        _KERNEL.append(numba.njit(cache=True, parallel=True)(_walk_py))
    return _KERNEL[0]


def _walk_py(  # pragma: no cover - compiled by numba; tested through contributions()
    feature, threshold, true_next, false_next, missing_true, value, node_group, ref_true, roots,
    x, same, has_same, phi, mx, mr,
):  # fmt: skip
    """Every row down every tree (module docstring): a depth-first walk that splits where x and r part
    ways on an undecided fact; at a leaf, its value goes to the facts of A and B by the Shapley weights."""
    n, n_groups = phi.shape
    fact = np.ones(64)
    for k in range(1, 64):
        fact[k] = fact[k - 1] * k
    for i in prange(n):
        state = np.zeros(n_groups, dtype=np.int8)  # 0 undecided, 1 in A (x's value), 2 in B (r's value)
        assigned = np.empty(64, dtype=np.int64)
        s_node = np.empty(128, dtype=np.int64)
        s_na = np.empty(128, dtype=np.int64)
        s_nb = np.empty(128, dtype=np.int64)
        s_len = np.empty(128, dtype=np.int64)
        s_group = np.empty(128, dtype=np.int64)
        s_state = np.empty(128, dtype=np.int8)
        for root in roots:
            sp = 0
            s_node[0], s_na[0], s_nb[0], s_len[0], s_group[0], s_state[0] = root, 0, 0, 0, -1, 0
            length = 0
            while sp >= 0:
                node, na, nb, base_len = s_node[sp], s_na[sp], s_nb[sp], s_len[sp]
                g_new, g_state = s_group[sp], s_state[sp]
                sp -= 1
                for k in range(base_len, length):
                    state[assigned[k]] = 0
                length = base_len
                if g_new >= 0:
                    state[g_new] = g_state
                    assigned[length] = g_new
                    length += 1
                while feature[node] >= 0:
                    g = node_group[node]
                    v = x[i, feature[node]]
                    xd = missing_true[node] if np.isnan(v) else v <= threshold[node]
                    rd = xd if has_same and same[i, g] else ref_true[node]
                    if state[g] == 1 or (state[g] == 0 and xd == rd):
                        node = true_next[node] if xd else false_next[node]
                    elif state[g] == 2:
                        node = true_next[node] if rd else false_next[node]
                    else:  # x and r part ways: r's side waits on the stack, x's side goes on
                        sp += 1
                        s_node[sp] = true_next[node] if rd else false_next[node]
                        s_na[sp], s_nb[sp], s_len[sp], s_group[sp], s_state[sp] = na, nb + 1, length, g, 2
                        state[g] = 1
                        assigned[length] = g
                        length += 1
                        na += 1
                        node = true_next[node] if xd else false_next[node]
                leaf = value[node]
                if nb == 0:
                    mx[i] += leaf
                if na == 0:
                    mr[i] += leaf
                if na + nb > 0:
                    w_a = leaf * fact[max(na - 1, 0)] * fact[nb] / fact[na + nb]
                    w_b = -leaf * fact[na] * fact[max(nb - 1, 0)] / fact[na + nb]
                    for k in range(length):
                        g = assigned[k]
                        phi[i, g] += w_a if state[g] == 1 else w_b
            for k in range(length):
                state[assigned[k]] = 0



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
    node_group = np.where(t.feature >= 0, groups[np.maximum(t.feature, 0)], -1).astype(np.int64)
    ref = reference[np.maximum(t.feature, 0)].astype(np.float32)
    ref_true = np.where(np.isnan(ref), t.missing_true, ref <= t.threshold)
    has_same = same is not None
    mask = same if same is not None else np.zeros((1, 1), dtype=bool)
    _kernel()(
        t.feature, t.threshold, t.true_next, t.false_next, t.missing_true, t.value, node_group, ref_true,
        t.roots, np.ascontiguousarray(x, dtype=np.float32), mask, has_same, phi, mx, mr,
    )  # fmt: skip
