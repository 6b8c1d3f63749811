"""Live quality: every prediction logged with an id, verdicts as feedback, scores per version, shadow scoring.

`LiveQuality` (live.py) is the face the pipeline holds; the log's writer (log.py), its store (store.py), the
scores (scores.py) and the shadow scorer (shadow.py) sit behind it.
"""
