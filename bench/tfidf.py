"""The classic baseline beside the student: TF-IDF + logistic regression (scikit-learn), one classifier per output
field, trained on the same pool examples the student learns from.

Each field's values (JSON-encoded, so ints, nulls and strings all work) are the classes; a field with one value in
the pool is predicted as that constant. A classifier can only answer values it has seen, so on extraction fields
(names, products) it mostly fails: that is the point of the comparison.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any


def input_text(value: Any, key: str = "") -> str:
    """Every string leaf of an input, prefixed with its field name, one per line."""
    if isinstance(value, dict):
        return "\n".join(input_text(v, k) for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(input_text(v, key) for v in value)
    return f"{key}: {value}" if key else str(value)


class TfidfBaseline:
    """fit(pool) then predict(input) -> output dict."""

    def __init__(self) -> None:
        self.vectorizer: Any = None
        self.fields: dict[str, Any] = {}  # field -> fitted classifier, or ("const", value)
        self.train_s = 0.0

    def fit(self, rows: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> TfidfBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=200_000)
        features = self.vectorizer.fit_transform([input_text(r["input"]) for r in rows])
        for name in outputs[0]:
            labels = [json.dumps(o.get(name), sort_keys=True) for o in outputs]
            if len(set(labels)) < 2:
                self.fields[name] = ("const", labels[0])
            else:
                self.fields[name] = LogisticRegression(max_iter=2000, C=10.0).fit(features, labels)
        self.train_s = time.perf_counter() - start
        return self

    def predict(self, task_input: dict[str, Any]) -> dict[str, Any]:
        x = self.vectorizer.transform([input_text(task_input)])
        out = {}
        for name, clf in self.fields.items():
            label = clf[1] if isinstance(clf, tuple) else clf.predict(x)[0]
            out[name] = json.loads(label)
        return out
