"""Surface rules of the labeler: mention phrases per finding and the cue words around them.

Phrases are regular expressions matched case-insensitively on word boundaries. Findings are the 14
CheXpert observations plus the finer lesion kinds (nodule, mass, lesion) that the embedded data and
the reference critic need; `CHEXPERT_OF` folds the finer kinds back into CheXpert's `lung_lesion`.
"""
from __future__ import annotations

import re

CHEXPERT = (
    "no_finding", "enlarged_cardiomediastinum", "cardiomegaly", "lung_lesion", "lung_opacity", "edema",
    "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural_effusion", "pleural_other",
    "fracture", "support_devices",
)

_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|shadow|size)|cardiomediastinal silhouette)"
_ADV = r"(?:(?:mildly|moderately|markedly|severely|slightly|borderline|top normal|at least) )?"

# Order matters only for overlaps: the longest match wins, then the earliest in this table.
MENTIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"cardiomegaly", r"cardiac enlargement", r"enlarge(?:d|ment of the) (?:heart|cardiac silhouette)",
        rf"{_HEART} (?:is |are |appears? |remains? )*(?:not )?{_ADV}(?:enlarged|large|prominent)",
        # "normal" phrasings are mentions too; `NORMAL` below makes them negative.
        rf"{_HEART} (?:is |are |appears? |remains? )*(?:normal|within normal limits|unremarkable)",
        rf"normal (?:heart size|{_HEART})", rf"{_HEART} (?:is )?normal in size",
    ),
    "enlarged_cardiomediastinum": (
        r"(?:widened|widening of the|enlarged) (?:mediastinum|mediastinal silhouette)",
        r"mediastinal (?:widening|enlargement)", r"mediastinum is (?:widened|enlarged)",
    ),
    "nodule": (r"nodules?", r"nodular (?:density|densities|opacity|opacities)"),
    "mass": (r"mass(?:es)?",),
    "lesion": (r"lesions?", r"tumou?rs?", r"neoplasms?", r"carcinoma"),
    "lung_opacity": (
        r"opacit(?:y|ies)", r"opacification", r"infiltrates?", r"airspace disease", r"air space disease",
        r"hazy (?:density|densities)", r"(?:patchy|streaky|interstitial|focal) densit(?:y|ies)",
    ),
    "edema": (r"(?:pulmonary |interstitial |alveolar )?edema", r"(?:pulmonary )?vascular congestion",
              r"congestive heart failure", r"\bchf"),
    "consolidation": (r"consolidations?", r"consolidative"),
    "pneumonia": (r"pneumonias?", r"bronchopneumonia", r"infectious process",
                  r"(?<!granulomatous )infection"),
    "atelectasis": (r"atelectas[ie]s", r"atelectatic", r"(?:lung|lobar) collapse"),
    "pneumothorax": (r"pneumothora(?:x|ces)",),
    "pleural_effusion": (
        r"(?<!pericardial )(?:pleural )?effusions?", r"pleural fluid",
        r"blunting of the (?:\w+ )?costophrenic (?:angle|sulcus|recess)s?",
        r"blunted (?:\w+ )?costophrenic (?:angle|sulcus|recess)s?",
        r"costophrenic (?:angle|sulcus|recess)s? (?:is |are )?blunted",
    ),
    "pleural_other": (r"pleural (?:thickening|scarring|plaques?)", r"fibrothorax"),
    "fracture": (r"fractures?", r"fractured"),
    "support_devices": (
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|et|ng) tubes?", r"catheters?",
        r"picc(?: line)?", r"central (?:venous )?(?:line|catheter)", r"pacemaker", r"pacer",
        r"defibrillator", r"stents?", r"sternotomy wires?", r"port-?a-?cath", r"leads",
    ),
}

CHEXPERT_OF = {"nodule": "lung_lesion", "mass": "lung_lesion", "lesion": "lung_lesion"}

# A "normal ..." mention is a negative statement of the finding it names.
NORMAL = re.compile(r"\b(?:normal|within normal limits|unremarkable)\b", re.I)
NOT_IN_MENTION = re.compile(r"\bnot\b", re.I)

# NegEx-style cues. Pre-cues govern mentions after them up to a scope terminator; post-cues govern
# the mention(s) just before them. Pseudo-negations look like cues but negate nothing.
NEG_PRE = (
    r"no", r"not", r"without", r"negative for", r"free of", r"absence of", r"absent", r"resolution of",
    r"resolved", r"clear of", r"nor", r"rather than", r"removal of", r"no evidence of", r"no signs? of",
)
NEG_POST = (
    r"(?:is |are |was |were |has been |have been )?(?:not (?:seen|identified|present|visualized|visible|"
    r"demonstrated|appreciated|evident|noted|detected))",
    r"(?:is |are |has |have )?(?:absent|resolved|gone|cleared)",
)
UNC_PRE = (
    r"possible", r"possibly", r"probable", r"probably", r"likely", r"may(?: be| represent)?", r"might",
    r"could(?: be| represent)?", r"suspicious for", r"suspected", r"suspicion (?:for|of)", r"question(?: of)?",
    r"(?:evaluation|evaluate|assess|assessment) (?:for|of)", r"concerning for", r"worrisome for",
    r"suggest(?:s|ive of|ing)?", r"questionable", r"equivocal", r"borderline",
    r"cannot (?:be )?(?:excluded|ruled out)", r"can ?not exclude", r"not (?:be )?excluded",
    r"differential(?: diagnosis| considerations?)? includes?", r"(?:differential )?considerations? includes?", r"versus", r"vs\.?", r"rule out", r"r/o", r"consider",
    r"indeterminate",
)
UNC_POST = (
    r"(?:is |are )?(?:cannot|can not|not) (?:be )?(?:excluded|ruled out)", r"(?:is |are )?(?:possible|suspected|"
    r"questioned|not excluded)", r"\?",
)
PSEUDO_NEG = (
    r"no (?:significant |interval |appreciable |substantial )?change", r"no increase", r"not only",
    r"not significantly changed", r"no longer (?:seen|present|visible)", r"without (?:interval )?change",
    r"gram[- ]negative",
)

# Scope ends at these words inside a sentence (sentences end at . ! ? and newlines).
TERMINATORS = (
    r";", r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"\bwhereas\b",
    r"\bwhile\b", r"\bwhich\b", r"\baside from\b", r"\bapart from\b",
    r",\s*and\b",
    r"\band (?=(?:the|there|a|an)\b)", r",\s*(?=(?:the|there)\b)",
)

SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "bilaterally": "bilateral",
         "both": "bilateral", "bibasilar": "bilateral", "bibasal": "bilateral",
         "left-sided": "left", "right-sided": "right"}
SEVERITIES = {"tiny": "small", "trace": "small", "small": "small", "minimal": "mild", "mild": "mild",
              "mildly": "mild", "moderate": "moderate", "moderately": "moderate", "medium": "moderate",
              "large": "large", "massive": "large", "severe": "severe", "severely": "severe",
              "marked": "severe", "markedly": "severe", "extensive": "severe"}
COUNTS = {"a": 1, "an": 1, "one": 1, "single": 1, "solitary": 1, "two": 2, "three": 3, "four": 4,
          "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "several": "multiple",
          "multiple": "multiple", "numerous": "multiple", "few": "multiple", "innumerable": "multiple"}
UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "cm": 10.0, "centimeter": 10.0,
           "centimeters": 10.0}
