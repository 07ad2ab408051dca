"""The serving exports of a run's stages: one version per finished stage."""

import os

from keras_incremental.saving.serving import export_for_serving
from keras_incremental.saving.serving import exported_versions


def export_stage(model, export_dir, class_names, run, stage, scores=None):
    """Exports `stage` of `run` as the next version of `export_dir`, unless
    a version there holds it already.

    Args:
        model: The model as the stage ended.
        export_dir: The base folder of the versions.
        class_names: The class names, in index order.
        run: The run's id, recorded in the version's metadata.
        stage: The stage number, recorded beside it.
        scores: Optional score layers answered beside the classes (see
            `export_for_serving`).

    Returns:
        The path of the stage's version folder, as a string.
    """
    export_dir = os.fspath(export_dir)
    if os.path.isdir(export_dir):
        path = None
        for version, metadata in sorted(exported_versions(export_dir).items()):
            if (
                isinstance(metadata, dict)
                and metadata.get("run") == run
                and metadata.get("stage") == stage
            ):
                path = os.path.join(export_dir, str(version))
        if path is not None:
            return path
    return os.fspath(
        export_for_serving(
            model,
            export_dir,
            class_names=class_names,
            metadata={"run": run, "stage": stage},
            scores=scores,
        )
    )
