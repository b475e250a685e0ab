"""Model configuration: the fields of the Dynamics "Add model" page, their rules, defaults and edit rules.

Rules (see ../shared/reference/dynamics-scoring-rules.md 1.2-1.8); where Dynamics documents nothing we
choose and document here and in docs/MODELING.md:
- overlap test: same entity (always opportunity) + same BPF (None = every BPF, so it overlaps any) +
  overlapping filters. Two filters overlap when either model has no filter, or both filter the same
  column with at least one common value. Filters on different columns are reported as overlapping:
  without data we cannot prove them disjoint (the admin can pass `force`).
- grade ranges: contiguous integer ranges A > B > C > D covering 0..100; stored as the minima of A, B, C.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modeling.errors import ConfigError, ConflictError
from modeling.features import boolean_options
from modeling.values import MODEL_NAME, is_finite_number, matches

MAX_MODELS = 10
TRAINING_PERIODS: dict[str, int] = {"3m": 3, "6m": 6, "1y": 12, "2y": 24}  # months
DEFAULT_TRAINING_PERIOD = "2y"
DEFAULT_STATE_OPTION_SET = "statecode"
DEFAULT_WON_LABEL = "Won"
DEFAULT_LOST_LABEL = "Lost"
STATECODE_OPTIONS: dict[str, str] = {"0": "Open", "1": "Won", "2": "Lost"}
# Learn module defaults for grades (A 75-100, B 50-74, C 25-49, D 0-24). Scores are calibrated
# probabilities, so "A" reads as "at least 75% of such deals are won".
DEFAULT_GRADE_MINIMA: tuple[int, int, int] = (75, 50, 25)
GRADES = ("A", "B", "C", "D")

# Fields the admin may change after creation (Dynamics: attributes, grade ranges, auto-retrain).
EDITABLE_FIELDS = frozenset({"attributes", "stageAttributes", "gradeRanges", "autoRetrain"})
KNOWN_FIELDS = frozenset(
    {
        "name",
        "businessProcessFlow",
        "stateOptionSet",
        "wonValues",
        "lostValues",
        "filterColumn",
        "filterValues",
        "trainingPeriod",
        "perStage",
        "attributes",
        "stageAttributes",
        "gradeRanges",
        "autoRetrain",
        "force",
    }
)


@dataclass(frozen=True)
class ModelConfig:
    """A validated model configuration. `to_json()` gives the camelCase form of DESIGN.md."""

    name: str
    business_process_flow: str | None = None  # workflowid of the BPF, None = any
    state_option_set: str = DEFAULT_STATE_OPTION_SET
    won_values: tuple[int, ...] = (1,)
    lost_values: tuple[int, ...] = (2,)
    filter_column: str | None = None
    filter_values: tuple[str, ...] = ()
    training_period: str = DEFAULT_TRAINING_PERIOD
    per_stage: bool = False
    attributes: tuple[str, ...] | None = None  # None = the default (recommended) attributes
    stage_attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stage name -> attrs
    grade_ranges: tuple[int, int, int] = DEFAULT_GRADE_MINIMA  # minima of A, B, C (D starts at 0)
    auto_retrain: bool = True
    created_on: str | None = None  # ISO UTC

    @property
    def training_months(self) -> int:
        return TRAINING_PERIODS[self.training_period]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "businessProcessFlow": self.business_process_flow,
            "stateOptionSet": self.state_option_set,
            "wonValues": list(self.won_values),
            "lostValues": list(self.lost_values),
            "filterColumn": self.filter_column,
            "filterValues": list(self.filter_values),
            "trainingPeriod": self.training_period,
            "perStage": self.per_stage,
            "attributes": None if self.attributes is None else list(self.attributes),
            "stageAttributes": {k: list(v) for k, v in self.stage_attributes.items()},
            "gradeRanges": grade_ranges_json(self.grade_ranges),
            "autoRetrain": self.auto_retrain,
            "createdOn": self.created_on,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Rebuilds a stored (already validated) configuration; no metadata checks."""
        return cls(
            name=str(data["name"]),
            business_process_flow=data.get("businessProcessFlow"),
            state_option_set=data.get("stateOptionSet") or DEFAULT_STATE_OPTION_SET,
            won_values=tuple(int(v) for v in data.get("wonValues") or (1,)),
            lost_values=tuple(int(v) for v in data.get("lostValues") or (2,)),
            filter_column=data.get("filterColumn"),
            filter_values=tuple(str(v) for v in data.get("filterValues") or ()),
            training_period=data.get("trainingPeriod") or DEFAULT_TRAINING_PERIOD,
            per_stage=bool(data.get("perStage", False)),
            attributes=None if data.get("attributes") is None else tuple(data["attributes"]),
            stage_attributes={k: tuple(v) for k, v in (data.get("stageAttributes") or {}).items()},
            grade_ranges=parse_grade_ranges(data.get("gradeRanges")),
            auto_retrain=bool(data.get("autoRetrain", True)),
            created_on=data.get("createdOn"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- grade ranges


def grade_ranges_json(minima: Sequence[int]) -> dict[str, dict[str, int]]:
    a, b, c = minima
    return {
        "A": {"min": a, "max": 100},
        "B": {"min": b, "max": a - 1},
        "C": {"min": c, "max": b - 1},
        "D": {"min": 0, "max": c - 1},
    }


def parse_grade_ranges(value: Any, fld: str = "gradeRanges") -> tuple[int, int, int]:
    """Accepts None (defaults), `[75, 50, 25]` (minima of A, B, C), `{"A": 75, ...}` (minima) or
    `{"A": {"min": 75, "max": 100}, ...}` (full ranges, which must be contiguous and cover 0..100)."""
    if value is None:
        return DEFAULT_GRADE_MINIMA
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ConfigError(fld, "give the minimum scores of grades A, B and C, e.g. [75, 50, 25]")
        minima = [_int_in(v, fld) for v in value]
    elif isinstance(value, Mapping):
        if set(value) - set(GRADES) or not {"A", "B", "C"} <= set(value):
            raise ConfigError(fld, "keys must be the grades A, B, C (and optionally D)")
        if all(isinstance(value[g], Mapping) for g in value):
            ranges = {
                g: (_int_in(value[g].get("min"), fld), _int_in(value[g].get("max"), fld)) for g in value
            }
            if "D" not in ranges:
                raise ConfigError(fld, "full ranges must list A, B, C and D")
            if ranges["A"][1] != 100 or ranges["D"][0] != 0:
                raise ConfigError(fld, "ranges must cover 0..100 (A ends at 100, D starts at 0)")
            for hi, lo in (("A", "B"), ("B", "C"), ("C", "D")):
                if ranges[lo][1] != ranges[hi][0] - 1:
                    raise ConfigError(fld, f"ranges must be contiguous: {lo} must end at {ranges[hi][0] - 1}")
            minima = [ranges["A"][0], ranges["B"][0], ranges["C"][0]]
        else:
            minima = [_int_in(value[g], fld) for g in ("A", "B", "C")]
    else:
        raise ConfigError(fld, "must be a list of 3 minima or an object keyed by grade")
    a, b, c = minima
    if not 100 >= a > b > c > 0:
        raise ConfigError(fld, "minima must satisfy 100 >= A > B > C > 0 so every grade is non-empty")
    return (a, b, c)


def grade_for(score: int, minima: Sequence[int]) -> int:
    """0=A, 1=B, 2=C, 3=D for an integer score 0..100."""
    for i, lo in enumerate(minima):
        if score >= lo:
            return i
    return 3


def _int_in(value: Any, fld: str) -> int:
    if not is_finite_number(value) or int(value) != value:
        raise ConfigError(fld, "grade bounds must be integers between 0 and 100")
    if not 0 <= int(value) <= 100:
        raise ConfigError(fld, "grade bounds must be integers between 0 and 100")
    return int(value)


# ---------------------------------------------------------------- validation


def default_name(now: datetime) -> str:
    return "OpportunityScoring_" + now.astimezone(UTC).strftime("%Y%m%d%H%M")


def validate_with_metadata(
    payload: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    now: datetime,
    existing: Sequence[ModelConfig] = (),
) -> ModelConfig:
    """`validate_config` against an org metadata document (the lake's `metadata.json` shape: `processes`,
    `attributes`, `optionsets`)."""
    return validate_config(
        payload,
        existing=list(existing),
        processes=metadata["processes"],
        attributes=metadata["attributes"],
        optionsets=metadata["optionsets"],
        now=now,
    )


def validate_config(
    payload: Mapping[str, Any],
    *,
    existing: Sequence[ModelConfig],
    processes: Sequence[Mapping[str, Any]],
    attributes: Mapping[str, Sequence[Mapping[str, Any]]],
    optionsets: Mapping[str, Mapping[str, Mapping[str, str]]],
    now: datetime,
) -> ModelConfig:
    """Validates a creation payload (camelCase) against the org metadata and the existing models.

    Raises ConfigError (400) for an invalid field, ConflictError (409) for a taken name, the 10-model
    limit, or an overlap with existing models unless `force` is true.
    """
    if not isinstance(payload, Mapping):
        raise ConfigError("body", "must be a JSON object")
    unknown = sorted(set(payload) - KNOWN_FIELDS)
    if unknown:
        raise ConfigError(unknown[0], "unknown field; allowed: " + ", ".join(sorted(KNOWN_FIELDS)))
    opp_attrs = {a["name"]: a for a in attributes.get("opportunity", [])}
    acc_attrs = {a["name"]: a for a in attributes.get("account", [])}

    name = payload.get("name")
    if name is None:
        name = default_name(now)
    if not matches(MODEL_NAME, name):
        raise ConfigError("name", "only letters, digits and '_' (1 to 100 characters)")

    bpf = _resolve_bpf(payload.get("businessProcessFlow"), processes)

    per_stage = payload.get("perStage", False)
    if not isinstance(per_stage, bool):
        raise ConfigError("perStage", "must be true or false")
    if per_stage and bpf is None:
        raise ConfigError("businessProcessFlow", "required when perStage is true")

    state_set = payload.get("stateOptionSet", DEFAULT_STATE_OPTION_SET)
    if not isinstance(state_set, str) or not state_set:
        raise ConfigError("stateOptionSet", "must be the name of an option set column of opportunity")
    options = _options_of(state_set, optionsets, opp_attrs)
    if options is None:
        raise ConfigError("stateOptionSet", f"'{state_set}' is not an option set column of opportunity")
    won = _resolve_options(payload.get("wonValues", [DEFAULT_WON_LABEL]), options, "wonValues")
    lost = _resolve_options(payload.get("lostValues", [DEFAULT_LOST_LABEL]), options, "lostValues")
    if set(won) & set(lost):
        raise ConfigError("lostValues", "a value cannot be both won and lost")

    filter_column = payload.get("filterColumn")
    filter_values: tuple[str, ...] = ()
    if filter_column is not None:
        if not isinstance(filter_column, str) or filter_column not in opp_attrs:
            raise ConfigError("filterColumn", "must be an attribute of opportunity")
        raw_values = payload.get("filterValues")
        if not isinstance(raw_values, list) or not raw_values:
            raise ConfigError("filterValues", "give a non-empty list of values when filterColumn is set")
        if any(isinstance(v, (dict, list)) or v is None for v in raw_values):
            raise ConfigError("filterValues", "values must be strings or numbers")
        col_opts = _options_of(filter_column, optionsets, opp_attrs)
        if col_opts is not None:
            filter_values = tuple(str(v) for v in _resolve_options(raw_values, col_opts, "filterValues"))
        else:
            filter_values = tuple(sorted({str(v) for v in raw_values}))
    elif payload.get("filterValues"):
        raise ConfigError("filterValues", "needs filterColumn")

    period = payload.get("trainingPeriod", DEFAULT_TRAINING_PERIOD)
    if not isinstance(period, str) or period not in TRAINING_PERIODS:
        raise ConfigError("trainingPeriod", "one of " + ", ".join(TRAINING_PERIODS))

    attrs = _validate_attributes(payload.get("attributes"), opp_attrs, acc_attrs, state_set)
    stage_attrs = _validate_stage_attributes(
        payload.get("stageAttributes"), per_stage, bpf, processes, opp_attrs, acc_attrs, state_set
    )
    grades = parse_grade_ranges(payload.get("gradeRanges"))
    auto = payload.get("autoRetrain", True)
    if not isinstance(auto, bool):
        raise ConfigError("autoRetrain", "must be true or false")
    force = payload.get("force", False)
    if not isinstance(force, bool):
        raise ConfigError("force", "must be true or false")

    config = ModelConfig(
        name=name,
        business_process_flow=bpf,
        state_option_set=state_set,
        won_values=won,
        lost_values=lost,
        filter_column=filter_column,
        filter_values=filter_values,
        training_period=period,
        per_stage=per_stage,
        attributes=attrs,
        stage_attributes=stage_attrs,
        grade_ranges=grades,
        auto_retrain=auto,
        created_on=now.astimezone(UTC).isoformat(),
    )
    if any(m.name.lower() == name.lower() for m in existing):
        raise ConflictError(f"a model named {name} already exists", code="ModelExists", model=name)
    check_model_limit(existing)
    overlaps = find_overlaps(config, existing)
    if overlaps and not force:
        raise ConflictError(
            "the model may score the same opportunities as: "
            + ", ".join(overlaps)
            + '; change the filter or create it with "force": true',
            code="OverlappingModels",
            models=overlaps,
        )
    return config


def check_model_limit(existing: Sequence[ModelConfig], limit: int = MAX_MODELS) -> None:
    if len(existing) >= limit:
        raise ConflictError(
            f"at most {limit} models (published or not) may exist; delete one first",
            code="ModelLimitReached",
            limit=limit,
            count=len(existing),
        )


def find_overlaps(config: ModelConfig, existing: Iterable[ModelConfig]) -> list[str]:
    """Names of existing models that may score the same opportunities (rule in the module docstring)."""
    out = []
    for other in existing:
        if other.name == config.name:
            continue
        if (
            config.business_process_flow is not None
            and other.business_process_flow is not None
            and config.business_process_flow != other.business_process_flow
        ):
            continue
        if config.filter_column is None or other.filter_column is None:
            out.append(other.name)
        elif config.filter_column != other.filter_column:
            out.append(other.name)
        elif set(config.filter_values) & set(other.filter_values):
            out.append(other.name)
    return sorted(out)


def apply_edit(
    config: ModelConfig,
    patch: Mapping[str, Any],
    *,
    attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    processes: Sequence[Mapping[str, Any]] = (),
) -> ModelConfig:
    """Applies an admin edit. Only attributes, stageAttributes, gradeRanges and autoRetrain can change;
    attribute changes need auto-retrain off (it may be switched off in the same patch)."""
    if not isinstance(patch, Mapping) or not patch:
        raise ConfigError("body", "must be a non-empty JSON object")
    for key in patch:
        if key not in EDITABLE_FIELDS:
            rule = "can be set only when the model is created" if key in KNOWN_FIELDS else "unknown field"
            raise ConfigError(key, rule + "; editable: " + ", ".join(sorted(EDITABLE_FIELDS)))
    auto = patch.get("autoRetrain", config.auto_retrain)
    if not isinstance(auto, bool):
        raise ConfigError("autoRetrain", "must be true or false")
    new = replace(config, auto_retrain=auto)
    if "gradeRanges" in patch:
        new = replace(new, grade_ranges=parse_grade_ranges(patch["gradeRanges"]))
    if "attributes" in patch or "stageAttributes" in patch:
        if auto:
            raise ConfigError("attributes", "can be edited only while autoRetrain is off")
        attrs = attributes or {}
        opp_attrs = {a["name"]: a for a in attrs.get("opportunity", [])}
        acc_attrs = {a["name"]: a for a in attrs.get("account", [])}
        if "attributes" in patch:
            new = replace(
                new,
                attributes=_validate_attributes(
                    patch["attributes"], opp_attrs, acc_attrs, config.state_option_set
                ),
            )
        if "stageAttributes" in patch:
            new = replace(
                new,
                stage_attributes=_validate_stage_attributes(
                    patch["stageAttributes"],
                    config.per_stage,
                    config.business_process_flow,
                    processes,
                    opp_attrs,
                    acc_attrs,
                    config.state_option_set,
                ),
            )
    return new


def ensure_deletable(config: ModelConfig) -> None:
    """Dynamics blocks delete while "Retrain automatically" is on (409)."""
    if config.auto_retrain:
        raise ConflictError(
            f"turn autoRetrain off before deleting {config.name}", code="AutoRetrainOn", model=config.name
        )


# ---------------------------------------------------------------- helpers


def _resolve_bpf(value: Any, processes: Sequence[Mapping[str, Any]]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError("businessProcessFlow", "must be a process id or unique name")
    for p in processes:
        if value.lower() in {str(p.get("workflowid", "")).lower(), str(p.get("uniquename", "")).lower()}:
            return str(p["workflowid"])
    raise ConfigError("businessProcessFlow", f"no opportunity business process flow '{value}'")


def _options_of(
    column: str,
    optionsets: Mapping[str, Mapping[str, Mapping[str, str]]],
    opp_attrs: Mapping[str, Mapping[str, Any]],
) -> Mapping[str, str] | None:
    opts = optionsets.get("opportunity", {}).get(column)
    if str((opp_attrs.get(column) or {}).get("type", "")) == "Boolean" or (
        opts and {str(k).lower() for k in opts} == {"true", "false"}
    ):
        return boolean_options(opts)  # keyed "1"/"0" as the lake's True/False compare (dataset.tables.option_key)
    if opts:
        return opts
    if column == "statecode":
        return STATECODE_OPTIONS
    return None


def _resolve_options(values: Any, options: Mapping[str, str], fld: str) -> tuple[int, ...]:
    """Option values given as integers or labels (case-insensitive) -> sorted integer codes."""
    if isinstance(values, (str, int)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ConfigError(fld, "give a non-empty list of option values or labels")
    by_label = {str(label).lower(): int(code) for code, label in options.items()}
    out = set()
    for v in values:
        if isinstance(v, bool):
            raise ConfigError(fld, f"{v!r} is not an option value")
        if isinstance(v, int) and str(v) in options:
            out.add(v)
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit() and v.strip() in options:
            out.add(int(v))
        elif isinstance(v, str) and v.lower() in by_label:
            out.add(by_label[v.lower()])
        else:
            raise ConfigError(
                fld,
                f"{v!r} is not an option of the chosen option set "
                f"(options: {', '.join(sorted(options.values()))})",
            )
    return tuple(sorted(out))


def _validate_attributes(
    value: Any,
    opp_attrs: Mapping[str, Mapping[str, Any]],
    acc_attrs: Mapping[str, Mapping[str, Any]],
    state_set: str,
) -> tuple[str, ...] | None:
    from modeling.dataset.attributes import attribute_ineligibility  # one rule, shared with the dataset builder

    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError("attributes", "must be a non-empty list of attribute names")
    for v in value:
        reason = attribute_ineligibility(v, opp_attrs, acc_attrs, state_set)
        if reason:
            raise ConfigError("attributes", f"'{v}' {reason}")
    return tuple(dict.fromkeys(value))


def _validate_stage_attributes(
    value: Any,
    per_stage: bool,
    bpf: str | None,
    processes: Sequence[Mapping[str, Any]],
    opp_attrs: Mapping[str, Mapping[str, Any]],
    acc_attrs: Mapping[str, Mapping[str, Any]],
    state_set: str,
) -> dict[str, tuple[str, ...]]:
    if value is None or value == {}:
        return {}
    if not per_stage:
        raise ConfigError("stageAttributes", "needs perStage true")
    if not isinstance(value, Mapping):
        raise ConfigError("stageAttributes", "must map stage names to lists of attribute names")
    stages = set()
    for p in processes:
        if str(p.get("workflowid")) == bpf:
            stages = {str(s.get("stagename")) for s in p.get("stages", [])}
    out: dict[str, tuple[str, ...]] = {}
    for stage, attrs in value.items():
        if stage not in stages:
            raise ConfigError(
                "stageAttributes",
                f"'{stage}' is not a stage of the business process flow "
                f"(stages: {', '.join(sorted(stages))})",
            )
        checked = _validate_attributes(attrs, opp_attrs, acc_attrs, state_set)
        out[stage] = checked or ()
    return out
