"""The one model assembly: which file serves (MODEL_DIR's newest version or MODEL_PATH), which engine and
variant run it (ENGINE, PRECISION, FLIP_AVERAGED) and what its version is called.

The server's pipeline, the Ray deployment and both CLIs load through here, so they honour the same settings.
"""

from __future__ import annotations

from service.core.config import SessionSettings, Settings
from service.core.model import Classifier
from service.core.versions import ModelRepository, ModelSource


def model_source(settings: Settings, repository: ModelRepository | None = None) -> ModelSource:
    """MODEL_DIR's newest version (through the pipeline's repository, which remembers refused versions), else
    MODEL_PATH."""
    if settings.model_dir is not None:
        return (repository or ModelRepository(settings.model_dir)).latest()
    return ModelSource(settings.model_path, None)


def load_classifier(
    source: ModelSource, settings: Settings, session: SessionSettings | None = None, threads: int | None = None
) -> Classifier:
    """The classifier for `source` as the settings choose it; `session` overrides onnxruntime's threads (Ray
    replicas), `threads` every engine's (the shadow version's one thread)."""
    return Classifier.load(
        source.path, session or settings.session, engine=settings.engine, precision=settings.precision,
        flip_averaged=settings.flip_averaged, threads=threads,
    )


def version_name(source: ModelSource, classifier: Classifier) -> str:
    """MODEL_DIR's folder number, else the card's `version`, else "1"."""
    return source.version or str(getattr(classifier.metadata, "version", None) or "1")
