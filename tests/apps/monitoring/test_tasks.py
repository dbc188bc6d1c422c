"""The beat schedule and the task options the retraining loop relies on."""

from typing import Any

from apps.monitoring.models import RetrainingRun


def test_beat_schedules_the_monitoring_tasks_under_registered_names(settings: Any) -> None:
    from clinpredict.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert {"monitoring.score_daily", "monitoring.check_drift", "monitoring.realised_performance",
            "monitoring.daily_summary", "monitoring.retrain_scheduled"} <= scheduled
    assert scheduled <= set(app.tasks), scheduled - set(app.tasks)


def test_tasks_that_do_the_work_are_redelivered_when_their_worker_is_lost_and_have_time_limits(
        settings: Any) -> None:
    from apps.monitoring.tasks import retrain_task, score_chunk_task

    for task in (retrain_task, score_chunk_task):
        assert task.acks_late and task.reject_on_worker_lost, task.name
        assert 0 < task.soft_time_limit < task.time_limit, task.name
    # a message is handed out again only after the longest task could have finished
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > retrain_task.time_limit


def test_scheduled_retraining_asks_once_per_use_case_and_day(champion: Any, retrain_settings: Any) -> None:
    from apps.monitoring.tasks import retrain_scheduled_task

    first = retrain_scheduled_task.apply().get()
    again = retrain_scheduled_task.apply().get()

    run = RetrainingRun.objects.get()
    assert first["diabetes"]["created"] and not again["diabetes"]["created"]
    assert run.trigger == "schedule" and run.request_key.startswith("schedule:diabetes:")
