"""Model card (Markdown + HTML) generated from a run's manifest and validation report.

It fills the TRIPOD+AI items a program can know; items only a person can write are marked
``HUMAN INPUT REQUIRED`` and left as prompts.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

HUMAN = "**HUMAN INPUT REQUIRED:**"


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def _ci(m: dict[str, Any], key: str) -> str:
    ci = m.get(f"{key}_ci") or [None, None]
    if ci[0] is None:
        return _f(m.get(key))
    return f"{_f(m.get(key))} (95% CI {_f(ci[0])}-{_f(ci[1])})"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def render_markdown(manifest: dict[str, Any], validation: dict[str, Any]) -> str:
    spec = manifest["spec"]
    m = manifest["metrics"]
    test = m["test"]
    cv = m["cv"]
    base = manifest["linear_baseline"]
    split = manifest["split"]
    data = manifest["data"]
    at = test["at_threshold"]
    L: list[str] = []
    L += [f"# Model card: {manifest['title']} ({manifest['model_type']})", ""]
    L += [
        f"Use case `{manifest['use_case']}` · generated {manifest['created_at']} from run data by `ml train` · "
        f"seed {manifest['seed']}",
        "",
        f"Sections marked {HUMAN} must be completed by the responsible clinician or data scientist before the "
        "model is promoted; everything else is generated from the training run and must not be edited by hand "
        "(regenerate with `python -m ml card`).",
        "",
    ]
    signal = manifest.get("signal") or {}
    if signal.get("verdict") == "no_signal":
        L += ["## NO SIGNAL: do not use this model", ""]
        L += ["The training data showed no usable signal for the outcome, so this model's risks are not better "
              "than chance and the promotion gate refuses it:", ""]
        L += [f"- {r}." for r in signal.get("reasons", [])]
        L += [f"- Rule: {signal.get('rule', '')}.", ""]

    L += ["## 1. Intended use (TRIPOD+AI 3, 4)", ""]
    L += [spec.get("intended_use") or f"{HUMAN} intended use.", ""]
    L += [f"- Outcome: {spec['outcome']['label']} (column `{spec['outcome']['column']}`, positive value "
          f"`{spec['outcome']['positive']}`)."]
    L += [f"- Intended users and clinical setting: {HUMAN} who acts on the prediction, where, and when.",
          f"- Out of scope / must not be used for: {HUMAN}", ""]

    L += ["## 2. Data (TRIPOD+AI 5, 6, 8)", ""]
    L += [
        f"- Dataset file: `{manifest.get('dataset_file', 'n/a')}`, sha256 `{manifest['dataset_sha256']}`.",
        f"- Rows: {data['n_rows']}; patients: {data['n_patients']}; events: {data['n_events']} "
        f"(prevalence {_pct(data['prevalence'])}).",
        f"- Events per candidate predictor: {data['n_events'] / max(len(manifest['features']), 1):.1f}.",
        f"- Data source, collection period and setting: {HUMAN} who collected the data, where, between which "
        "dates, and how participants were selected (eligibility).",
        f"- Data validation: {data['n_warnings']} warning(s), see `validation_report.json` and below.",
        "",
    ]

    L += ["## 3. Predictors and missing data (TRIPOD+AI 7, 9)", ""]
    rows = []
    for f in manifest["features"]:
        info = data["per_feature"].get(f["name"], {})
        rng = f"{f['min']:g}-{f['max']:g}" if f["min"] is not None and f["max"] is not None else "n/a"
        rows.append([
            f["name"], f["label"], f["unit"] or "", ", ".join(f["accepted_units"][1:]) or "-", f["loinc"] or "-",
            rng, info.get("disguised_missing", 0), info.get("out_of_range", 0), info.get("converted", 0),
            _pct(info.get("missing_fraction")), "yes" if f["allow_missing"] else "no",
        ])
    L += _table(["feature", "definition", "unit", "other units", "LOINC", "plausible range", "disguised missing",
                 "out of range", "unit-converted", "missing (after cleaning)", "may be missing at prediction"], rows)
    L += [
        "Disguised missing codes (values the spec declares as 'missing', e.g. 0) and values outside the plausible "
        "range were set to missing before training.",
        "",
        f"- Missing values (training and prediction): {manifest['missing_value_handling']}.",
        "- Missing inputs at prediction time: a feature marked 'no' above is refused when absent; the others may be "
        "sent as null and are handled as in training. The prediction reports which inputs were missing.",
        "",
    ]

    L += ["## 4. Analysis (TRIPOD+AI 10, 11, 12)", ""]
    L += [
        f"- Model: {manifest['model_type']}; selected hyperparameters `{manifest['cv']['selected_params']}`.",
        f"- Split: {split['method']}; grouped by `{split['grouped_by']}`; train {split['n_train']} rows "
        f"({split['events_train']} events), test {split['n_test']} rows ({split['events_test']} events); "
        f"split sha256 `{manifest['split_sha256']}`. The test part was not used for any choice.",
        f"- Cross-validation: {manifest['cv']['method']}.",
        f"- Tuning: {len(manifest['cv']['candidates'])} candidate(s), selected by mean CV "
        f"`{manifest['cv']['selection_metric']}`.",
        f"- Class imbalance: {manifest['imbalance']['method']} (positive weight "
        f"{_f(manifest['imbalance']['positive_weight'])}); resampling: {manifest['imbalance']['resampling']}.",
        f"- Calibration: `{manifest['calibration']['method']}`, {manifest['calibration']['chosen_by']}; fitted on "
        f"{manifest['calibration']['fitted_on']}.",
        f"- Decision threshold: {_f(manifest['threshold'], 4)} ({manifest['threshold_rule']}).",
        f"- Explanations: {manifest['explanation']['method']}.",
        "",
    ]
    cand_rows = [[str(c["params"]), _f(c["auroc"]), _f(c["auprc"]), _f(c["brier"])]
                 for c in manifest["cv"]["candidates"]]
    L += _table(["candidate", "CV AUROC", "CV AUPRC", "CV Brier"], cand_rows)
    L += _family_section(manifest)

    L += ["## 5. Performance (TRIPOD+AI 23, 24)", ""]
    L += [f"Test part: {test['n']} rows, {test['events']} events. 95% CIs: stratified percentile bootstrap "
          f"({manifest['config']['bootstrap']} resamples).", ""]
    L += _table(
        ["metric", manifest["model_type"], "logistic baseline"],
        [
            ["AUROC", _ci(test, "auroc"), _ci(base["test"], "auroc")],
            ["AUPRC", _ci(test, "auprc"), _ci(base["test"], "auprc")],
            ["Brier score", _ci(test, "brier"), _ci(base["test"], "brier")],
            ["Calibration slope", _f(test["calibration_slope"]), _f(base["test"]["calibration_slope"])],
            ["Calibration intercept", _f(test["calibration_intercept"]), _f(base["test"]["calibration_intercept"])],
            ["CV AUROC (train part)", f"{_f(cv['auroc'])} ± {_f(cv['auroc_sd'])}",
             f"{_f(base['cv']['auroc'])} ± {_f(base['cv']['auroc_sd'])}"],
            ["CV AUPRC (train part)", f"{_f(cv['auprc'])} ± {_f(cv['auprc_sd'])}",
             f"{_f(base['cv']['auprc'])} ± {_f(base['cv']['auprc_sd'])}"],
        ],
    )
    L += [f"At the threshold {_f(manifest['threshold'], 4)} on the test part:", ""]
    L += _table(
        ["sensitivity", "specificity", "PPV", "NPV", "flagged", "TP", "FP", "TN", "FN"],
        [[_f(at["sensitivity"]), _f(at["specificity"]), _f(at["ppv"]), _f(at["npv"]), _pct(at["flagged_fraction"]),
          at["tp"], at["fp"], at["tn"], at["fn"]]],
    )
    L += ["Plots: ![ROC](plots/roc.png) ![Precision-recall](plots/pr.png) ![Calibration](plots/calibration.png) "
          "![Importance](plots/importance.png)", ""]

    L += ["## 6. Subgroups (TRIPOD+AI 14, 23)", ""]
    for name, groups in m.get("subgroups", {}).items():
        L += [f"### {name}", ""]
        L += _table(
            ["group", "n", "events", "AUROC (95% CI)", "Brier", "sensitivity", "specificity", "PPV", "NPV"],
            [[g["group"], g["n"], g["events"], _ci(g, "auroc"), _f(g["brier"]),
              _f(g["at_threshold"]["sensitivity"]), _f(g["at_threshold"]["specificity"]),
              _f(g["at_threshold"]["ppv"]), _f(g["at_threshold"]["npv"])] for g in groups],
        )
    L += [f"- Fairness assessment and groups not represented: {HUMAN}", ""]

    L += ["## 7. Data quality findings", ""]
    issues = validation.get("warnings", []) + validation.get("errors", [])
    if issues:
        L += _table(["level", "code", "column", "count", "message"],
                    [["error" if i in validation.get("errors", []) else "warning", i["code"], i["column"] or "-",
                      i["count"], i["message"]] for i in issues])
    else:
        L += ["No problems found.", ""]

    L += ["## 8. Limitations and clinical use (TRIPOD+AI 26, 27)", ""]
    L += [
        f"- Limitations: {HUMAN} e.g. single-site data, retrospective, population and period.",
        f"- External validation: {HUMAN} none yet unless stated.",
        f"- Ethics approval, funding and conflicts of interest: {HUMAN}",
        "",
    ]

    L += ["## 9. Reproducibility", ""]
    L += [
        f"- Dataset sha256 `{manifest['dataset_sha256']}`; split sha256 `{manifest['split_sha256']}`; seed "
        f"{manifest['seed']}.",
        f"- ONNX parity: max |p_joblib - p_onnx| = {manifest['onnx_parity_max_abs_diff']:.2e} over "
        f"{manifest['onnx_parity']['n_rows']} rows ({manifest['onnx_parity']['n_rows_with_missing']} with missing "
        "values).",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + ".",
        "- Artifact sha256 values are in `manifest.json`.",
        "",
    ]
    return "\n".join(L)


def _family_section(manifest: dict[str, Any]) -> list[str]:
    """Every model family's CV result and why one was chosen; small-data handling and the final fit."""
    sel = manifest.get("model_selection")
    L: list[str] = []
    if sel:
        L += ["### Model family", ""]
        L += [f"- Requested: `{sel.get('requested', manifest['model_type'])}`; chosen: **{sel['chosen']}**. "
              f"{sel['reason']}.", f"- Rule: {sel['rule']}.", ""]
        rows = []
        for family, res in sel["families"].items():
            c = res["cv"]
            rows.append([family + (" (chosen)" if family == sel["chosen"] else ""),
                         f"{_f(c['auroc'])} ± {_f(c['se']['auroc'])}",
                         f"{_f(c['log_loss'])} ± {_f(c['se']['log_loss'])}",
                         _f(c["brier"]), c["n_folds"], len(res["candidates"]), f"`{res['selected_params']}`"])
        L += _table(["family", "CV AUROC ± SE", "CV log loss ± SE", "CV Brier", "folds", "candidates",
                     "best candidate"], rows)
    small = manifest.get("small_data")
    if small and small.get("active"):
        o = small.get("optimism") or {}
        L += ["### Small data", ""]
        L += [f"- {small['n_rows']} rows and {small['n_events']} events are below the small-data thresholds "
              f"({small['thresholds']['rows']} rows or {small['thresholds']['events']} events): selection used "
              f"{small['cv_repeats']}x repeated CV."]
        if o:
            L += [f"- Bootstrap optimism ({o['n_boot']} resamples): apparent AUROC {_f(o['apparent_auroc'])}, optimism "
                  f"{_f(o['optimism_auroc'])}, corrected AUROC **{_f(o['corrected_auroc'])}**; calibration slope "
                  f"apparent {_f(o['apparent_calibration_slope'])}, corrected {_f(o['corrected_calibration_slope'])}. "
                  f"{o['method']}."]
        L += [""]
    final = manifest.get("final_fit")
    if final:
        L += [f"- Final model: fitted on {final['rows']} ({final['n_rows']} rows, {final['n_events']} events). "
              f"{final['evidence']}.", ""]
    return L


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2" width="420">', t)
    t = re.sub(r"\*\*([^*]+)\*\*", r'<strong class="human">\1</strong>', t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return t


def markdown_to_html(md: str, title: str) -> str:
    """HTML for the subset of Markdown the card uses (headings, lists, pipe tables, paragraphs, images)."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    in_list = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in block]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells[0]) + "</tr>")
            for r in cells[2:]:
                out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
            continue
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
            i += 1
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    if in_list:
        out.append("</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;"
        "font-size:.9rem}th{background:#eee}.human{background:#fff3cd;color:#7a4b00}code{font-size:.85rem}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(out)
        + "\n</body></html>\n"
    )


def write_model_card(manifest: dict[str, Any], validation: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    md = render_markdown(manifest, validation)
    md_path = Path(out_dir) / "model_card.md"
    html_path = Path(out_dir) / "model_card.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(markdown_to_html(md, f"Model card: {manifest['title']}"), encoding="utf-8")
    return md_path, html_path
