"""One served version: its classifier, its version name and its predictor, with the request path it measured.

`ServedModel.load` is the one assembly of a version run in this process: the file checked and loaded once
(`service.core.assembly`), warmed, and given the predictor its measured request path calls for (the direct path
or the micro-batcher, `service.core.request_path`). The Ray ingress builds one over a remote model instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core import request_path
from service.core.assembly import load_classifier, version_name
from service.core.batching import MicroBatcher
from service.core.config import Settings
from service.core.direct import DirectPredictor
from service.core.lanes import lane_threads
from service.core.memory import return_freed_memory
from service.core.metrics import Metrics
from service.core.model import Classifier, serving_batch_sizes
from service.core.predictor import Predictor
from service.core.quality.records import Answerer
from service.core.request_path import PathChoice
from service.core.versions import ModelSource


@dataclass(frozen=True)
class ServedModel:
    """One loaded version with its own predictor, so a request admitted to it is answered by it even while a
    newer version takes over (the old predictor drains what it admitted, then stops)."""

    classifier: Classifier
    version: str
    predictor: Predictor
    request_path: PathChoice | None = None  # None: a remote model, whose replicas choose their own
    # Seconds the warm-up at load took (None: not warmed yet, as a remote model is).
    warm_s: float | None = None

    @classmethod
    def load(cls, source: ModelSource, settings: Settings, metrics: Metrics) -> ServedModel:
        """Loads, checks and warms the version, then measures which request path it gets."""
        classifier = load_classifier(source, settings)
        version = version_name(source, classifier)
        warm_s = classifier.warm_up(serving_batch_sizes(settings.max_batch_size))  # fails when run: ModelLoadError
        threads = lane_threads(settings)
        choice = request_path.choose(settings, classifier.infer, classifier.predict, threads)
        predictor: Predictor
        if choice.path == "direct":
            # The direct path runs one image at a time: what the batch warm-up and the measurement grew is freed
            # and the lone shape warmed again (45 MiB of RSS at ready for the default model on OpenVINO: 34 by the
            # engine, 11 by the C heap's trim; BENCHMARKS.md).
            classifier.release_memory()
            return_freed_memory()
            warm_s += classifier.warm_up((1,))
            predictor = DirectPredictor(
                classifier.infer, lone=classifier.predict, max_in_flight=settings.max_queue_images,
                threads=threads, on_batch=metrics.observe_batch,
            )
        else:
            predictor = MicroBatcher(
                classifier.predict,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_batch_wait_s,
                max_queue=settings.max_queue_images,
                on_batch=metrics.observe_batch,
            )
        return cls(classifier, version, predictor, choice, warm_s)

    def warm_up(self, max_batch_size: int) -> float:
        return self.classifier.warm_up(serving_batch_sizes(max_batch_size))

    def describe_path(self) -> str:
        """The request path and why, in words (the start-up and reload log lines)."""
        choice = self.request_path
        return f"{choice.path} ({choice.reason})" if choice is not None else "remote"

    @property
    def answerer(self) -> Answerer:
        """Who answered, as the prediction log records it."""
        engine = self.classifier.engine
        names = self.classifier.metadata.class_names
        return Answerer(self.version, engine.name, engine.precision, (names[0], names[1]))
