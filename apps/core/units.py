"""How UCUM unit codes read to a person. The code stays the value that is stored and sent; this is display only."""

UCUM_DISPLAY = {
    "a": "years",
    "mo": "months",
    "{count}": "",
    "1": "",
    "%": "%",
    "mm[Hg]": "mmHg",
    "kg/m2": "kg/m²",
    "u[IU]/mL": "µIU/mL",
    "m[IU]/L": "mIU/L",
    "umol/L": "µmol/L",
    "ug/L": "µg/L",
    "Cel": "°C",
    "[degF]": "°F",
    "[lb_av]": "lb",
    "[in_i]": "in",
}


def unit_display(code: str | None) -> str:
    if not code:
        return ""
    return UCUM_DISPLAY.get(code, code)
