"""Sends every held-out test image, as its original file bytes, through a running service and
checks that the accuracy from the HTTP answers equals the one the train command recorded.

    python -m training.check_service --url http://127.0.0.1:8000 --metadata models/model.json
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from service.core.model_card import ModelCardError, read_model_card
from training import data as datasets
from training.evaluate import binary_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check_service", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--metadata", type=Path, default=Path("models/model.json"))
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)

    try:
        card = read_model_card(args.metadata)
        test = datasets.held_out_test_set(card)
    except (ModelCardError, datasets.DataError) as exc:
        print(f"check_service: {exc}", file=sys.stderr)
        return 2
    with httpx.Client(base_url=args.url, timeout=60) as client:
        served = client.get("/model").raise_for_status().json()
        # A precision variant (PRECISION, training.variants) is checked against its own recorded accuracy.
        variant = next((v for v in card.variants or [] if v.sha256 == served["id"]
                        and (v.engine, v.precision) == (served.get("engine"), served.get("precision"))), None)
        if variant is not None and variant.precision == "fp32":
            variant = None
        if served["id"] != card.sha256 and variant is None:
            print(f"check_service: the service runs model {served['id'][:12]}, "
                  f"not {(card.sha256 or '?')[:12]} from {args.metadata}", file=sys.stderr)
            return 2

        def probability(path: str) -> float:
            body = Path(path).read_bytes()
            answer = client.post("/predict", content=body, headers={"content-type": "image/png"})
            return answer.raise_for_status().json()["predictions"][0]["probability"]

        with ThreadPoolExecutor(args.concurrency) as pool:
            probabilities = np.array(list(pool.map(probability, test.sources)))
    measured = binary_metrics(test.y, probabilities, card.threshold)
    if variant is not None:
        return _report(
            measured, f" ({variant.engine} {variant.precision})", measured["accuracy"] == variant.accuracy,
            f"accuracy of the variant:  {variant.accuracy:.4f}  (python -m training.variants)",
            "the variant measurement",
        )
    recorded = card.test_metrics
    if recorded is None:
        print(f"check_service: {args.metadata} records no test_metrics to compare with", file=sys.stderr)
        return 2
    return _report(
        measured, "", measured["confusion_matrix"] == recorded.confusion_matrix,
        f"accuracy at train time:   {recorded.accuracy:.4f}  confusion {recorded.confusion_matrix}", "training",
    )


def _report(measured: dict, served_by: str, same: bool, reference: str, reference_source: str) -> int:
    """Prints HTTP's figures beside the reference's and the verdict; the exit status is the verdict."""
    print(f"held-out images sent over HTTP: {measured['images']}{served_by}")
    print(f"accuracy via HTTP:        {measured['accuracy']:.4f}  confusion {measured['confusion_matrix']}")
    print(reference)
    print("identical" if same else f"DIFFERENT: serving does not see what {reference_source} saw")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
