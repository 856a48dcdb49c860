"""Records of real generated studies (the embedded generator, no images) for the critic, noise and guard tests."""
from __future__ import annotations

from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.record import Record
from medpo_ray.data.reports import REPORT_PROMPT
from medpo_ray.data.synth import generate_study


def generated_records(studies: int, seed: int) -> list[Record]:
    """The report and VQA records of `studies` generated studies (difficulty 0.5, 112 px), with truth."""
    params = LesionParams.from_difficulty(0.5, 112)
    out = []
    for i in range(studies):
        row, questions = generate_study(i, seed, 112, params)
        f = {**row["findings"], "lesions": row["lesions"]}
        out.append(Record(row["study_id"], "report", b"", REPORT_PROMPT, row["report"], findings=f,
                          study_id=row["study_id"]))
        out += [Record(q["qid"], "vqa", b"", q["question"], q["answer"], findings=f, study_id=row["study_id"],
                       question_type=q["question_type"], answer_type=q["answer_type"]) for q in questions]
    return out
