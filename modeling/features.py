"""The one feed builder shared by training, the ONNX parity check and scoring.

A *feature spec* (JSON, stored in a version's meta) lists the model's inputs. `prepare(frame, spec)`
turns a frame of raw attribute values (+ derived columns) into the ONNX feed: one `[n, 1]` input per
feature, strings for categories and float32 for numbers. Bad values never raise: an unknown option
value, a wrong type, an absurd number (outside the learned bounds, e.g. 1e15 or a negative amount) or a
missing column are treated as missing and counted (`prepare_with_report`).

Categories: missing -> "__missing__" (explicit sentinel; ONNX string tensors have no null, see
stack-pitfalls Q3), values not seen often enough in training -> "__other__". Free-text columns (String,
Memo with many distinct values) become presence flags ("__filled__" / "__missing__").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING = "__missing__"
OTHER = "__other__"
FILLED = "__filled__"
STAGE_COLUMN = "__stage__"
MAX_CATEGORIES = 60
MIN_CATEGORY_COUNT = 5
FREE_TEXT_MIN_DISTINCT = 100  # a String with more distinct values than this (and mostly unique) is free text
ABSURD_ABS = 1e13  # numbers beyond this are never real CRM values
BOOLEAN_DEFAULT_LABELS = {"1": "Yes", "0": "No"}
_TRUE_TEXT = {"1", "true", "yes", "y", "t"}
_FALSE_TEXT = {"0", "false", "no", "n", "f"}


def input_name(name: str) -> str:
    """ONNX input names: letters, digits and '_' only."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def bool_key(v: Any) -> str | None:
    """A Boolean (two-option) value in any lake shape -> "1" (true) / "0" (false); None when missing or not
    a Boolean (True/False, 1/0, "true"/"false", "yes"/"no")."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer, float, np.floating)):
        x = float(v)
        return "1" if x == 1.0 else "0" if x == 0.0 else None
    if isinstance(v, str):
        t = v.strip().lower()
        return "1" if t in _TRUE_TEXT else "0" if t in _FALSE_TEXT else None
    return None


def boolean_options(options: Mapping[str, Any] | None) -> dict[str, str]:
    """Labels of a Boolean column keyed "1" (true) / "0" (false). The lake metadata holds {"true": label,
    "false": label} (connectors.dataverse `option_sets`), possibly {"1": .., "0": ..}, or nothing: then
    Yes / No."""
    out = dict(BOOLEAN_DEFAULT_LABELS)
    for k, v in (options or {}).items():
        key = bool_key(k)
        if key is not None and v is not None and str(v).strip():
            out[key] = str(v)
    return out


def is_boolean(item: Mapping[str, Any]) -> bool:
    """A Boolean feature: flagged at build time, or (specs of older versions) labelled "true"/"false"."""
    if item.get("boolean"):
        return True
    options = item.get("options") or {}
    return {str(k).lower() for k in options} == {"true", "false"}


def build_spec(
    frame: pd.DataFrame,
    features: Sequence[Mapping[str, Any]],
    *,
    stage_applicability: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Learns the spec from training rows. `features` items: {"name", "kind": "category"|"number",
    "label", "options": {code: label} | None, "source": attribute logical name, "derived": bool}."""
    out = []
    for f in features:
        name = str(f["name"])
        col = frame[name] if name in frame.columns else pd.Series([None] * len(frame), dtype=object)
        item: dict[str, Any] = {
            "name": name,
            "input": input_name(name),
            "kind": f["kind"],
            "label": f.get("label") or name,
            "source": f.get("source", name),
            "derived": bool(f.get("derived", False)),
        }
        if f["kind"] == "category":
            options = f.get("options")
            if f.get("boolean") or is_boolean(f):
                item["boolean"] = True
                options = boolean_options(options)
            item["options"] = {str(k): str(v) for k, v in options.items()} if options else None
            presence = False
            if not options and f.get("text", False):
                nonnull = col.dropna().astype(str)
                nonnull = nonnull[nonnull.str.len() > 0]
                presence = nonnull.nunique() > FREE_TEXT_MIN_DISTINCT or (
                    len(nonnull) > 0 and nonnull.nunique() > 0.5 * len(nonnull)
                )
            item["presence"] = presence
            if presence:
                item["categories"] = [FILLED, MISSING]
            else:
                item["categories"] = []  # filled below from the mapped values
                values = _category_values(col, item)
                counts = values[values != MISSING].value_counts()
                keep = [str(v) for v, c in counts.items() if c >= MIN_CATEGORY_COUNT][:MAX_CATEGORIES]
                item["categories"] = sorted(keep) + [OTHER, MISSING]
        else:
            if f.get("unit"):
                item["unit"] = str(f["unit"])
            num = pd.to_numeric(col, errors="coerce").astype(float)
            num = num[np.isfinite(num) & (num.abs() < ABSURD_ABS)]
            lo = 0.0 if len(num) == 0 or float(num.min()) >= 0 else -ABSURD_ABS
            hi = ABSURD_ABS if len(num) == 0 else float(min(ABSURD_ABS, max(abs(float(num.max())) * 1000, 1e6)))
            item["lower"] = lo
            item["upper"] = hi
            item["median"] = float(num.median()) if len(num) else 0.0
            # winsorising bounds: values beyond the training range are clipped (linear models must not
            # extrapolate, e.g. counts that keep growing after training)
            item["clip"] = [float(num.quantile(0.005)), float(num.quantile(0.995))] if len(num) else None
        out.append(item)
    spec: dict[str, Any] = {"version": 1, "features": out}
    if stage_applicability:
        spec["stage_applicability"] = {s: list(v) for s, v in stage_applicability.items()}
    return spec


def _map_distinct(s: pd.Series, fn: Any, *, keep_numbers_apart: bool = False) -> pd.Series:
    """`s.map(fn)` with fn called once per distinct value (missing values -> None).

    pandas treats 1, 1.0 and True as one value; with `keep_numbers_apart` (fn tells them apart) a column
    holding a 0 or 1 goes row by row. Unhashable values (bad data: lists, dicts) go row by row too."""
    try:
        codes, uniq = pd.factorize(s, use_na_sentinel=True)
    except TypeError:
        return s.map(fn)
    if keep_numbers_apart and any(
        isinstance(u, (bool, np.bool_, int, np.integer, float, np.floating)) and u in (0, 1) for u in uniq
    ):
        return s.map(fn)
    values = np.array([fn(u) for u in uniq] + [None], dtype=object)
    return pd.Series(values[codes], index=s.index, dtype=object)  # code -1 (missing) takes the None


def _category_values(col: pd.Series, item: Mapping[str, Any], bad: list[int] | None = None) -> pd.Series:
    """Raw column -> strings (option labels for option sets), missing -> MISSING, not yet capped."""
    n = len(col)
    if item.get("presence"):
        s = col.astype(object)
        filled = s.notna() & (s.astype(str).str.len() > 0)
        return pd.Series(np.where(filled.to_numpy(), FILLED, MISSING), index=col.index, dtype=object)
    options = item.get("options")
    s = col.astype(object)
    isnull = s.isna().to_numpy()
    if options and is_boolean(item):
        options = boolean_options(options)
        if pd.api.types.is_bool_dtype(col.dtype) and not bool(col.isna().any()):
            keys = pd.Series(np.where(col.to_numpy(dtype=bool), "1", "0"), index=col.index, dtype=object)
        else:
            keys = s.map(bool_key)
        mapped = keys.map(options)
        unknown = mapped.isna().to_numpy() & ~isnull
        if bad is not None:
            bad[0] += int(unknown.sum())
        out = mapped.where(mapped.notna(), MISSING)
    elif options:
        if (pd.api.types.is_integer_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)) and not bool(
            col.isna().any()
        ):
            # fast path for clean option-set columns (int64 codes / booleans): vectorised keys
            keys = pd.Series(col.to_numpy().astype("int64").astype(str), index=col.index, dtype=object)
        else:
            keys = _map_distinct(s, _option_key)  # 1, 1.0 and True all key "1": merging them is right
        mapped = keys.map(options)
        unknown = mapped.isna().to_numpy() & ~isnull
        if bad is not None:
            bad[0] += int(unknown.sum())
        out = mapped.where(mapped.notna(), MISSING)
    else:
        text = _map_distinct(s, _plain_text, keep_numbers_apart=True)
        out = text.where(text.notna(), MISSING)
        if bad is not None:
            bad[0] += int((text.isna().to_numpy() & ~isnull).sum())
    if n == 0:
        return pd.Series([], dtype=object)
    return out.astype(object)


def _option_key(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else None
    if isinstance(v, str):
        t = v.strip()
        return t if t.lstrip("-").isdigit() else t
    return None


def _plain_text(v: Any) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return None
    if isinstance(v, (dict, list, tuple, set, bytes)):
        return None  # wrong type: treated as missing
    if isinstance(v, (bool, np.bool_)):
        return "Yes" if v else "No"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    t = str(v).strip()
    return t if t else None


def prepare_with_report(frame: pd.DataFrame, spec: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """ONNX feed + per-feature count of values treated as missing because they were bad
    (unknown option, wrong type, out of bounds) or because the column is absent ("<name>" -> count)."""
    n = len(frame)
    feed: dict[str, np.ndarray] = {}
    report: dict[str, int] = {}
    applic = spec.get("stage_applicability") or {}
    stage = frame[STAGE_COLUMN].astype(object).to_numpy() if applic and STAGE_COLUMN in frame.columns else None
    for item in spec["features"]:
        name = item["name"]
        bad = [0]
        if name in frame.columns:
            col = frame[name]
        else:
            col = pd.Series([None] * n, index=frame.index, dtype=object)
            bad[0] = n
        if item["kind"] == "category":
            values = _category_values(col, item, bad).to_numpy(dtype=object)
            cats = item["categories"]
            if not item.get("presence"):
                known = pd.Index(cats)
                pos = known.get_indexer(values)
                values = np.where(pos >= 0, values, OTHER).astype(object)
            if stage is not None:
                values = np.where(_inapplicable(stage, name, applic), MISSING, values).astype(object)
            feed[item["input"]] = values.reshape(-1, 1)
        else:
            raw = col
            num = pd.to_numeric(raw, errors="coerce") if raw.dtype == object else raw
            try:
                arr = np.asarray(num, dtype=float)
            except (TypeError, ValueError):
                arr = np.asarray(pd.to_numeric(raw.astype(object), errors="coerce"), dtype=float)
            if name in frame.columns:
                wrong = np.isnan(arr) & raw.notna().to_numpy()
                arr = np.where(np.isfinite(arr), arr, np.nan)
                out_of_bounds = (arr < item["lower"]) | (arr > item["upper"])
                bad[0] += int(wrong.sum() + out_of_bounds.sum())
                arr = np.where(out_of_bounds, np.nan, arr)
            if item.get("clip"):
                arr = np.clip(arr, item["clip"][0], item["clip"][1])
            if stage is not None:
                arr = np.where(_inapplicable(stage, name, applic), np.nan, arr)
            feed[item["input"]] = arr.astype(np.float32).reshape(-1, 1)
        if bad[0]:
            report[name] = bad[0]
    return feed, report


def _inapplicable(stage: np.ndarray, name: str, applic: Mapping[str, Sequence[str]]) -> np.ndarray:
    """True where the row's stage has an applicability list that does not include the feature."""
    mask = np.zeros(len(stage), dtype=bool)
    for st, names in applic.items():
        if name not in names:
            mask |= stage == st
    return mask


def prepare(frame: pd.DataFrame, spec: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The ONNX feed for `frame` (see module docstring)."""
    return prepare_with_report(frame, spec)[0]


def feed_to_frame(feed: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> pd.DataFrame:
    """The same values as a DataFrame with one column per ONNX input (what the sklearn pipeline fits on)."""
    return pd.DataFrame({item["input"]: feed[item["input"]].ravel() for item in spec["features"]})


def model_columns(spec: Mapping[str, Any]) -> list[str]:
    """The input each column of the model's transformed matrix comes from: one one-hot block per category
    input (its `categories`, in spec order), then one column per number input (the layout of
    modeling.candidates' ColumnTransformer)."""
    columns: list[str] = []
    for f in spec["features"]:
        if f["kind"] == "category":
            columns += [f["input"]] * len(f["categories"])
    return columns + number_inputs(spec)


def inapplicable(feed_stage: np.ndarray | None, name: str, spec: Mapping[str, Any]) -> np.ndarray | None:
    """Per-stage models: True where the row's stage does not apply feature `name` (None: applies everywhere)."""
    applic = spec.get("stage_applicability") or {}
    if feed_stage is None or not applic:
        return None
    mask = _inapplicable(feed_stage.ravel(), name, applic)
    return mask if mask.any() else None


def category_inputs(spec: Mapping[str, Any]) -> list[str]:
    return [f["input"] for f in spec["features"] if f["kind"] == "category"]


def number_inputs(spec: Mapping[str, Any]) -> list[str]:
    return [f["input"] for f in spec["features"] if f["kind"] == "number"]
