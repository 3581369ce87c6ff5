"""A run's saved reports keep the InfoMax health figures, so a reopened run can still be judged."""

from __future__ import annotations

import json

from kfstudio.core.runs import StepReport
from kfstudio.core.imb import StageHealth, infomax_collapsed
from kfstudio.io.reports import report_from_dict, report_to_dict


def test_step_report_health_survives_json():
    health = (StageHealth(-0.98, -0.98, 0.99), StageHealth(-0.97, -0.97, 0.98), StageHealth(0.8, 0.0, 0.3))
    report = StepReport(30, 100, 3.0, {"loss": 1.0}, 0.1, 500.0, 10.0, 4.0, health)
    back = report_from_dict(json.loads(json.dumps(report_to_dict(report))))
    assert back == report and infomax_collapsed(back.infomax_health)
    old = report_to_dict(report)
    del old["infomax_health"]  # written before the figures existed
    assert report_from_dict(old).infomax_health == ()
