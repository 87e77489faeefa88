"""Map what the classifier has learned: its penultimate embedding of every Training and Test clip.

    python embeddings.py --model-dir model/enhance [--data-dir Animals_Sounds] [--out DIR]

The embedding is what the head layer classifies (core/model_views.py). For Training and
Test: k-means with k = classes and its NMI / ARI against the labels; a logistic-regression
probe fit on Training and scored on Test; each clip's Euclidean distance to its own class
centroid and to the nearest other one (centroids of Training); a t-SNE of all clips
coloured by class.

Writes embedding_metrics.csv (metric, split, value), embeddings.csv (one row per clip: file,
split, label, predicted, t-SNE coordinates, centroid distances), tsne.png and
centroid_distances.png into --out (default MODEL_DIR/embeddings).
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import common
from core import embeddings
from core.model_data import (
    default_data_dir,
    examination_parser,
    keras_classifier,
    split_clips,
)


def parse_args(argv=None):
    p = examination_parser(__doc__.splitlines()[0], "embeddings")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="dataset with Training/ and Test/ (default: the one the model was trained on)")
    p.add_argument("--cache-dir", type=Path, default=common.DEFAULT_CACHE, help="feature cache")
    p.add_argument("--seed", type=int, default=0, help="k-means and t-SNE")
    return p.parse_args(argv)


def embed(views, x: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(logits, embeddings) of a feature batch through the model's two-output view."""
    parts = [views.predict_on_batch(x[i:i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def main(argv=None):
    args = parse_args(argv)
    from core.model_views import (
        logits_and_embedding,  # imports TensorFlow (~10 s): not before --help
    )
    try:
        clf = keras_classifier(args.model_dir)
        data_dir = args.data_dir or default_data_dir(clf.config)
        splits = {s: split_clips(data_dir, s, clf.classes, clf.front_end, args.cache_dir) for s in ("Training", "Test")}
    except (common.ModelDirError, common.DatasetError) as e:
        sys.exit(f"error: {e}")
    views = logits_and_embedding(clf.predictor.model)
    out = args.out or clf.model_dir / "embeddings"
    n_classes = len(clf.classes)

    logits, vectors = zip(*(embed(views, clips.x) for clips in splits.values()))
    labels = [clips.y for clips in splits.values()]
    centres = embeddings.centroids(vectors[0], labels[0], n_classes)
    rows, clips_table = [], []
    for (split, clips), z, y, scores in zip(splits.items(), vectors, labels, logits):
        own, other, nearest = embeddings.centroid_distances(z, y, centres)
        rows += [{"metric": k, "split": split, "value": v}
                 for k, v in embeddings.cluster_scores(z, y, n_classes, args.seed).items()]
        rows += [{"metric": "nearest_centroid_accuracy", "split": split, "value": float(np.mean(nearest == y))},
                 {"metric": "model_accuracy", "split": split, "value": float(np.mean(scores.argmax(1) == y))}]
        clips_table.append(pd.DataFrame({
            "file": [str(f) for f in clips.files], "split": split, "label": [clf.classes[i] for i in y],
            "predicted": [clf.classes[i] for i in scores.argmax(1)], "own_centroid_distance": own,
            "nearest_other_centroid_distance": other, "nearest_centroid": [clf.classes[i] for i in nearest]}))
    rows += [{"metric": k, "split": "Test", "value": v}
             for k, v in embeddings.probe_scores(vectors[0], labels[0], vectors[1], labels[1]).items()]
    metrics = pd.DataFrame(rows)
    table = pd.concat(clips_table, ignore_index=True)

    print(f"t-SNE of {len(table)} embeddings ({vectors[0].shape[1]} dims)...", flush=True)
    points = embeddings.tsne_2d(np.concatenate(vectors), args.seed)
    table["tsne_x"], table["tsne_y"] = points[:, 0], points[:, 1]
    name = f"{clf.model_dir.name}: penultimate embedding"
    embeddings.plot_tsne(points, np.concatenate(labels), (table.split == "Test").to_numpy(), clf.classes,
                         f"{name}, t-SNE", out / "tsne.png")
    test = table[table.split == "Test"]
    embeddings.plot_centroid_distances(test.own_centroid_distance.to_numpy(),
                                       test.nearest_other_centroid_distance.to_numpy(),
                                       f"{name}: Test clips to Training centroids", out / "centroid_distances.png")
    common.atomic_write(out / "embedding_metrics.csv", metrics.to_csv(index=False))
    common.atomic_write(out / "embeddings.csv", table.to_csv(index=False))
    print(metrics.pivot(index="metric", columns="split", values="value").to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/embedding_metrics.csv, embeddings.csv, tsne.png and centroid_distances.png")


if __name__ == "__main__":
    main()
