"""Validation of one prediction request (``validate_record``) and of a training dataset (``validate_dataset``).

Both convert values to the spec's canonical units. A training dataset additionally has its disguised missing
codes (e.g. 0 for Pima insulin) and implausible values turned into missing values, each counted and reported with
the rows and columns concerned; problems that make the data unusable are errors and stop training.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.schema import FeatureSpec, UnitError, UseCaseSpec

MAX_ROWS_LISTED = 20


# --------------------------------------------------------------------------------------------------------------------
# One prediction request
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    values: dict[str, float | None]
    errors: dict[str, list[str]]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def vector(self, spec: UseCaseSpec) -> np.ndarray:
        """The values as a float32 row (1, n_features) in spec order, NaN for missing: the ONNX input."""
        return np.array(
            [[np.nan if self.values[n] is None else self.values[n] for n in spec.feature_names]], dtype=np.float32
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _record_value(feature: FeatureSpec, raw: Any) -> tuple[float | None, list[str]]:
    """Return (canonical value or None, errors) for one feature value of a request."""
    unit: str | None = None
    value: Any = raw
    if isinstance(raw, Mapping):
        extra = sorted(set(raw) - {"value", "unit"})
        if extra:
            return None, [f"unexpected key(s) {', '.join(extra)}; send {{\"value\": number, \"unit\": unit}}"]
        if "value" not in raw:
            return None, ['missing "value"; send {"value": number or null, "unit": unit}']
        value = raw.get("value")
        unit_raw = raw.get("unit")
        if unit_raw is not None and not isinstance(unit_raw, str):
            return None, [f"unit must be a string; accepted: {_accepted_units_text(feature)}"]
        unit = unit_raw
    if value is None:
        return None, []
    if feature.type == "binary" and isinstance(value, bool | np.bool_):
        value = float(value)
    if feature.type == "binary" and isinstance(value, str):
        code = feature.binary_code(value)
        if code is None:
            return None, [f"unknown value {value!r}; accepted: {feature.binary_accepted_text()}"]
        value = code
    if feature.type == "categorical" and isinstance(value, str):
        if value in feature.categories:
            return float(feature.categories.index(value)), []
        return None, [f"unknown category {value!r}; accepted: {', '.join(feature.categories)}"]
    if not _is_number(value):
        what = "true/false" if isinstance(value, bool | np.bool_) else type(value).__name__
        return None, [f"must be a number ({feature.range_text()}), got {what}"]
    try:
        fvalue = float(value)
    except OverflowError:  # an int beyond the range of a double (a 400-digit integer)
        fvalue = math.inf
    if not math.isfinite(fvalue):
        return None, [f"must be a finite number ({feature.range_text()})"]
    try:
        canonical = feature.to_canonical(fvalue, unit)
    except UnitError:
        return None, [f"unknown unit {unit!r}; accepted: {_accepted_units_text(feature)}"]
    if feature.type == "binary" and canonical not in (0.0, 1.0):
        return None, [f"must be 0 or 1; accepted: {feature.binary_accepted_text()}"]
    if feature.type == "categorical" and (canonical != int(canonical) or not feature.in_range(canonical)):
        return None, [f"must be one of {', '.join(feature.categories)} (or its index 0-{len(feature.categories) - 1})"]
    if not feature.in_range(canonical):
        shown = f"{_num(fvalue)} {unit}" if unit and unit != feature.unit else _num(fvalue)
        converted = f" (= {_num(canonical)} {feature.unit})" if unit and unit != feature.unit else ""
        return None, [f"must be {feature.range_text()}; got {shown}{converted}"]
    return canonical, []


def _accepted_units_text(feature: FeatureSpec) -> str:
    return ", ".join(feature.accepted_units) if feature.accepted_units else "no unit (unitless)"


def _num(x: float) -> str:
    return f"{x:g}"


def validate_record(spec: UseCaseSpec, values: Mapping[str, Any]) -> RecordResult:
    """Validate one prediction request's feature values against the spec.

    Each value is a number (canonical unit), ``None`` (unknown), or ``{"value": number|None, "unit": str}``.
    """
    errors: dict[str, list[str]] = {}
    out: dict[str, float | None] = {}
    missing: list[str] = []
    if not isinstance(values, Mapping):
        return RecordResult(
            values={n: None for n in spec.feature_names},
            errors={"features": ["must be an object mapping feature name to value"]},
            missing=[],
        )
    accepted = ", ".join(spec.feature_names)
    for key in values:
        if key not in spec.feature_names:
            errors.setdefault(str(key), []).append(f"unknown feature; accepted: {accepted}")
    for feature in spec.features:
        if feature.name not in values:
            out[feature.name] = None
            errors[feature.name] = ["required; send null if the value is unknown"]
            continue
        canonical, errs = _record_value(feature, values[feature.name])
        out[feature.name] = canonical
        if errs:
            errors[feature.name] = errs
        elif canonical is None:
            if feature.allow_missing:
                missing.append(feature.name)
            else:
                errors[feature.name] = [f"required, cannot be null: a prediction needs it ({feature.range_text()})"]
    return RecordResult(values=out, errors=errors, missing=missing)


# --------------------------------------------------------------------------------------------------------------------
# A training dataset
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class DatasetIssue:
    code: str
    message: str
    column: str | None = None
    rows: list[int] = field(default_factory=list)  # 1-based data row numbers (line number in the CSV minus 1)
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "column": self.column,
            "rows": self.rows[:MAX_ROWS_LISTED],
            "count": self.count or len(self.rows),
        }

    def text(self) -> str:
        where = f"[{self.column}] " if self.column else ""
        rows = ""
        if self.rows:
            listed = ", ".join(str(r) for r in self.rows[:MAX_ROWS_LISTED])
            more = f" and {len(self.rows) - MAX_ROWS_LISTED} more" if len(self.rows) > MAX_ROWS_LISTED else ""
            rows = f" (rows {listed}{more})"
        return f"{self.code}: {where}{self.message}{rows}"


@dataclass
class DatasetReport:
    """What validation found. ``ok`` is False when any error makes the data unusable for training."""

    spec_use_case: str
    data_path: str
    dataset_sha256: str | None
    errors: list[DatasetIssue] = field(default_factory=list)
    warnings: list[DatasetIssue] = field(default_factory=list)
    n_rows: int = 0
    n_rows_used: int = 0
    n_patients: int = 0
    n_events: int = 0
    prevalence: float | None = None
    features: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, code: str, message: str, column: str | None = None, rows: list[int] | None = None) -> None:
        self.errors.append(DatasetIssue(code, message, column, list(rows or [])))

    def warn(self, code: str, message: str, column: str | None = None, rows: list[int] | None = None) -> None:
        self.warnings.append(DatasetIssue(code, message, column, list(rows or [])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_case": self.spec_use_case,
            "data_path": self.data_path,
            "dataset_sha256": self.dataset_sha256,
            "valid": self.ok,
            "n_rows": self.n_rows,
            "n_rows_used": self.n_rows_used,
            "n_patients": self.n_patients,
            "n_events": self.n_events,
            "prevalence": self.prevalence,
            "errors": [e.to_dict() for e in self.errors],
            "warnings": [w.to_dict() for w in self.warnings],
            "features": self.features,
        }

    def text(self) -> str:
        lines = [
            f"Dataset {self.data_path} for use case {self.spec_use_case!r}: "
            + ("VALID" if self.ok else f"INVALID ({len(self.errors)} error(s))"),
        ]
        if self.n_rows:
            prev = f"{self.prevalence:.1%}" if self.prevalence is not None else "n/a"
            lines.append(
                f"  {self.n_rows} rows, {self.n_patients} patients, {self.n_events} events (prevalence {prev})"
            )
        for e in self.errors:
            lines.append(f"  ERROR   {e.text()}")
        for w in self.warnings:
            lines.append(f"  WARNING {w.text()}")
        for name, info in self.features.items():
            parts = [f"missing {info['missing']}"]
            if info.get("disguised_missing"):
                parts.append(f"disguised missing {info['disguised_missing']}")
            if info.get("out_of_range"):
                parts.append(f"out of range {info['out_of_range']}")
            if info.get("converted"):
                parts.append(f"unit-converted {info['converted']}")
            lines.append(f"  {name:<20} " + ", ".join(parts))
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")


@dataclass
class ValidatedDataset:
    """Clean data in canonical units: ``X`` float64 (n, n_features) with NaN for missing, ``y`` 0/1 ints."""

    spec: UseCaseSpec
    frame: pd.DataFrame  # canonical features (by feature name) + subgroup columns, index = original row number
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    report: DatasetReport


class DataValidationError(ValueError):
    """The dataset cannot be used; ``report`` says why."""

    def __init__(self, report: DatasetReport) -> None:
        self.report = report
        first = report.errors[0].text() if report.errors else "invalid dataset"
        more = f" (+{len(report.errors) - 1} more error(s))" if len(report.errors) > 1 else ""
        super().__init__(f"dataset {report.data_path} is invalid: {first}{more}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rows(mask: np.ndarray | pd.Series) -> list[int]:
    """1-based data row numbers for a boolean mask over the frame (row 1 = first line after the header)."""
    return [int(i) + 1 for i in np.flatnonzero(np.asarray(mask))]


def _outcome_matches(series: pd.Series, positive: Any) -> tuple[pd.Series, pd.Series]:
    """(is_positive, is_known) comparing raw string values to the spec's positive value."""
    s = series.astype("string").str.strip()
    known = s.notna() & (s != "")
    pos_text = str(positive).strip()
    numeric = pd.to_numeric(s, errors="coerce")
    if isinstance(positive, bool):
        is_pos = s.str.lower().isin(["true", "1", "yes"]) if positive else s.str.lower().isin(["false", "0", "no"])
    elif isinstance(positive, int | float):
        is_pos = numeric == float(positive)
    else:
        is_pos = s == pos_text
    return is_pos.fillna(False).astype(bool), known.fillna(False).astype(bool)


def validate_dataset(
    spec: UseCaseSpec,
    data_path: Path,
    *,
    max_invalid_fraction: float = 0.1,
    min_events: int = 10,
) -> tuple[DatasetReport, ValidatedDataset | None]:
    """Validate a CSV against the spec. Returns the report and, when usable, the cleaned dataset.

    Errors (data unusable): unreadable/malformed CSV, a spec column missing, patient ids missing, non-numeric
    values, unknown units, outcome values that are missing or are not exactly two classes, fewer than
    ``min_events`` events or non-events, and a feature with more than ``max_invalid_fraction`` of its values out
    of range (usually a unit problem). Warnings (data used, affected values set to missing): disguised missing
    codes, isolated out-of-range values, missing values of a required feature, duplicate patients (kept together
    by the grouped split), duplicate rows and constant columns.
    """
    data_path = Path(data_path)
    report = DatasetReport(spec_use_case=spec.use_case, data_path=str(data_path), dataset_sha256=None)
    try:
        report.dataset_sha256 = file_sha256(data_path)
        raw_bytes = data_path.read_bytes()
    except OSError as exc:
        report.error("unreadable_file", f"cannot read {data_path}: {exc.strerror or exc}")
        return report, None
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.error("malformed_csv", f"not UTF-8 text (byte {exc.start}): is this a CSV file?")
        return report, None
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        report.error("malformed_csv", f"cannot parse CSV: {exc}")
        return report, None
    if lines:
        width = len(lines[0])
        ragged = [i for i, row in enumerate(lines[1:], start=1) if row and len(row) != width]
        if ragged:
            first = lines[ragged[0]]
            report.error(
                "malformed_csv",
                f"cannot parse CSV: the header has {width} fields but data row {ragged[0]} has {len(first)}",
                rows=ragged,
            )
            return report, None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        report.error("malformed_csv", "the file is empty: a CSV with a header row and data rows is expected")
        return report, None
    except (pd.errors.ParserError, ValueError) as exc:
        report.error("malformed_csv", f"cannot parse CSV: {str(exc).strip()}")
        return report, None
    df = df.reset_index(drop=True)
    df.columns = [str(c).strip() for c in df.columns]
    report.n_rows = len(df)
    if len(df) == 0:
        report.error("malformed_csv", "the CSV has a header but no data rows")
        return report, None
    dup_cols = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup_cols or any(c.startswith("Unnamed:") for c in df.columns):
        report.error("malformed_csv", f"header has duplicate or empty column names: {', '.join(dup_cols) or 'empty'}")
        return report, None

    needed = [spec.patient_id, spec.outcome.column, *[f.column for f in spec.features]]
    needed += [s.column for s in spec.subgroups]
    absent = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if absent:
        for c in absent:
            report.error(
                "missing_column",
                f"column {c!r} named by the spec is not in the data; columns present: {', '.join(df.columns)}",
                column=c,
            )
        return report, None

    def blank(s: pd.Series) -> pd.Series:
        st = s.astype("string").str.strip()
        return st.isna() | st.str.lower().isin(["", "na", "nan", "null", "none", "n/a"])

    # Patient ids
    pid = df[spec.patient_id].astype("string").str.strip()
    pid_blank = blank(df[spec.patient_id])
    if pid_blank.any():
        report.error("missing_patient_id", "patient id is empty", spec.patient_id, _rows(pid_blank))
    dup_pid = pid.duplicated(keep=False) & ~pid_blank
    if dup_pid.any():
        report.warn(
            "duplicate_patient",
            f"{int(pid[dup_pid].nunique())} patient id(s) appear on more than one row; "
            "their rows are kept on the same side of the split",
            spec.patient_id,
            _rows(dup_pid),
        )

    # Outcome
    ocol = spec.outcome.column
    is_pos, known = _outcome_matches(df[ocol], spec.outcome.positive)
    if (~known).any():
        report.error("missing_outcome", "outcome is empty", ocol, _rows(~known))
    distinct = sorted(set(df.loc[known, ocol].astype(str).str.strip()))
    if known.any():
        if not is_pos.any():
            report.error(
                "label_no_positive",
                f"no row has the positive outcome value {spec.outcome.positive!r}; values found: "
                f"{', '.join(distinct[:10])}",
                ocol,
            )
        elif len(distinct) == 1:
            report.error(
                "label_single_class",
                f"the outcome has a single class ({distinct[0]!r}): a binary model needs both",
                ocol,
            )
        elif len(distinct) > 2:
            # Numeric labels like "1" and "1.0" are the same class.
            numeric = pd.to_numeric(df.loc[known, ocol], errors="coerce")
            if numeric.isna().any() or numeric.nunique() > 2:
                report.error(
                    "label_bad_values",
                    f"the outcome must have exactly two values (positive = {spec.outcome.positive!r}); found "
                    f"{len(distinct)}: {', '.join(distinct[:10])}",
                    ocol,
                )
    y = is_pos.to_numpy().astype(np.int64)
    n_events = int(y[known.to_numpy()].sum())
    n_non = int(known.sum()) - n_events
    report.n_events = n_events
    report.prevalence = n_events / int(known.sum()) if known.any() else None
    if not report.errors and (n_events < min_events or n_non < min_events):
        report.error(
            "too_few_events",
            f"{n_events} events and {n_non} non-events; at least {min_events} of each are needed "
            "for cross-validation and a test set",
            ocol,
        )

    # Features
    canonical = pd.DataFrame(index=df.index)
    n = len(df)
    for feat in spec.features:
        col = df[feat.column]
        st = col.astype("string").str.strip()
        is_blank = blank(col).to_numpy()
        info: dict[str, Any] = {
            "column": feat.column,
            "unit": feat.unit,
            "missing_in_file": int(is_blank.sum()),
            "disguised_missing": 0,
            "out_of_range": 0,
            "converted": 0,
        }
        if feat.type == "categorical":
            codes = st.map(lambda v, f=feat: float(f.categories.index(v)) if v in f.categories else np.nan)
            numeric_vals = pd.to_numeric(st, errors="coerce")
            # float64 with NaN, not a nullable Float64 (pandas will not fill float64 from a nullable array)
            as_index = numeric_vals.astype("float64").where(numeric_vals.isin(range(len(feat.categories))))
            values = codes.fillna(as_index).astype("float64").to_numpy().copy()
            bad = ~is_blank & np.isnan(values)
            if bad.any():
                report.error(
                    "type_error",
                    f"unknown category; accepted: {', '.join(feat.categories)}",
                    feat.column,
                    _rows(bad),
                )
        else:
            if feat.type == "binary":
                # Declared labels (e.g. No/Yes) and 0/1/true/false/yes/no become "0"/"1"; anything else is read as
                # a number below (and reported when it is not 0 or 1).
                codes = st.map(lambda v, f=feat: None if pd.isna(v) else f.binary_code(str(v)))
                known_code = codes.notna()
                st = st.mask(known_code, codes.map(lambda c: "1" if c == 1.0 else "0"))
            values = pd.to_numeric(st, errors="coerce").astype("float64").to_numpy().copy()
            values[is_blank] = np.nan
            bad = ~is_blank & ~np.isfinite(values)
            if bad.any():
                report.error(
                    "type_error",
                    (f"unknown value; accepted: {feat.binary_accepted_text()}; e.g. {st[bad].iloc[0]!r}"
                     if feat.type == "binary" else
                     f"not a number ({feat.range_text()} expected); e.g. {st[bad].iloc[0]!r}"),
                    feat.column,
                    _rows(bad),
                )
            values[bad] = np.nan
        # Disguised missing codes, checked on the raw value before any unit conversion.
        disguised = np.isin(values, np.asarray(feat.missing_values, dtype=float)) if feat.missing_values else None
        if disguised is not None and disguised.any():
            info["disguised_missing"] = int(disguised.sum())
            codes_txt = ", ".join(_num(v) for v in feat.missing_values)
            report.warn(
                "disguised_missing",
                f"{int(disguised.sum())} value(s) equal to the missing code ({codes_txt}) set to missing",
                feat.column,
                _rows(disguised),
            )
            values[disguised] = np.nan
        # Units: an explicit <column>_unit column wins, then the spec's unit rules, else canonical.
        unit_col = f"{feat.column}_unit"
        unit_list: list[str | None] = [None] * n
        if unit_col in df.columns:
            unit_blank = blank(df[unit_col]).to_numpy()
            unit_text = df[unit_col].astype(str).str.strip().to_numpy()
            unit_list = [None if unit_blank[i] else str(unit_text[i]) for i in range(n)]
        for rule in feat.unit_rules:
            for i in np.flatnonzero(values < rule.below):
                if unit_list[i] is None:
                    unit_list[i] = rule.unit
        unit_arr = np.array(unit_list, dtype=object)
        conv_mask = np.zeros(n, dtype=bool)
        unknown_units: dict[str, list[int]] = {}
        for unit in sorted({u for u in unit_arr if u is not None and u != feat.unit}):
            m = (unit_arr == unit) & ~np.isnan(values)
            if unit not in feat.alternative_units:
                unknown_units[unit] = _rows(unit_arr == unit)
                values[unit_arr == unit] = np.nan
                continue
            values[m] = values[m] * feat.alternative_units[unit]
            conv_mask |= m
        for unit, rows in unknown_units.items():
            report.error(
                "unknown_unit",
                f"unknown unit {unit!r}; accepted: {_accepted_units_text(feat)}",
                unit_col,
                rows,
            )
        if conv_mask.any():
            info["converted"] = int(conv_mask.sum())
            report.warn(
                "unit_converted",
                f"{int(conv_mask.sum())} value(s) converted to {feat.unit}",
                feat.column,
                _rows(conv_mask),
            )
        # Plausible range (canonical units).
        finite = ~np.isnan(values)
        lo = -np.inf if feat.min is None else feat.min
        hi = np.inf if feat.max is None else feat.max
        oor = finite & ((values < lo) | (values > hi))
        if feat.type == "binary":
            oor |= finite & ~np.isin(values, [0.0, 1.0])
        if oor.any():
            info["out_of_range"] = int(oor.sum())
            frac = oor.sum() / max(int(finite.sum()), 1)
            examples = ", ".join(_num(v) for v in values[oor][:5])
            msg = (
                f"{int(oor.sum())} value(s) outside the plausible range ({feat.range_text()}), e.g. {examples}"
            )
            if frac > max_invalid_fraction:
                report.error(
                    "out_of_range",
                    msg + f": {frac:.0%} of the column, more than {max_invalid_fraction:.0%}; wrong unit?",
                    feat.column,
                    _rows(oor),
                )
            else:
                report.warn("out_of_range", msg + "; set to missing", feat.column, _rows(oor))
            values[oor] = np.nan
        missing = np.isnan(values)
        info["missing"] = int(missing.sum())
        info["missing_fraction"] = float(missing.mean())
        if missing.any() and not feat.allow_missing:
            report.warn(
                "missing_required",
                f"{int(missing.sum())} missing value(s) in a feature a prediction requires; the model learns "
                "from the rows, but predictions will refuse a missing value",
                feat.column,
                _rows(missing),
            )
        if missing.all():
            report.error("all_missing", "every value is missing", feat.column)
        else:
            present = values[~missing]
            info.update(
                {
                    "min": float(present.min()),
                    "max": float(present.max()),
                    "mean": float(present.mean()),
                    "median": float(np.median(present)),
                }
            )
            if np.unique(present).size == 1:
                report.warn("constant_column", f"every present value is {_num(present[0])}", feat.column)
        canonical[feat.name] = values
        report.features[feat.name] = info

    # Exact duplicate rows (same patient, same values, same outcome).
    dup_rows = df.duplicated(keep="first")
    if dup_rows.any():
        report.warn("duplicate_row", "row repeats an earlier row exactly", None, _rows(dup_rows))

    report.n_patients = int(pid[~pid_blank].nunique())
    report.n_rows_used = int(known.sum())
    if not report.ok:
        return report, None

    # Subgroup columns: canonical values when the column is a feature, else the raw text.
    frame = canonical.copy()
    by_column = {f.column: f.name for f in spec.features}
    for sg in spec.subgroups:
        if sg.column in by_column:
            frame[f"__sg_{sg.name}"] = canonical[by_column[sg.column]]
        else:
            frame[f"__sg_{sg.name}"] = df[sg.column].astype("string").str.strip()
    frame["__patient_id"] = pid.astype(str)
    frame["__y"] = y
    data = ValidatedDataset(
        spec=spec,
        frame=frame,
        X=canonical[list(spec.feature_names)].to_numpy(dtype=np.float64),
        y=y,
        groups=pid.astype(str).to_numpy(),
        report=report,
    )
    return report, data


def load_dataset(spec: UseCaseSpec, data_path: Path, **kwargs: Any) -> ValidatedDataset:
    """Validate and return the cleaned dataset, or raise ``DataValidationError``."""
    report, data = validate_dataset(spec, data_path, **kwargs)
    if data is None:
        raise DataValidationError(report)
    return data
