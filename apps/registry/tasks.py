"""Registry tasks: take ids, call one function, safe to rerun."""

from celery import shared_task


@shared_task(name="registry.model_version_mlflow_sync", ignore_result=True)
def model_version_mlflow_sync(version_id: int) -> str:
    """Move MLflow's `champion` alias to this version (enqueued on commit of a promotion)."""
    from .mlflow_sync import champion_alias_sync

    return champion_alias_sync(version_id=version_id)
