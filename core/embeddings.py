"""What the penultimate embedding has learned: clusters, a linear probe, distances to class centroids, t-SNE.

The embedding is the input of the model's head layer (``model_views.logits_and_embedding``):
what the softmax ``Dense`` or the prototype head classifies. Distances are Euclidean in
that space (the prototype head's own metric). Class centroids are means of the Training
embeddings.

==============================  ==========================================================
score                           meaning
==============================  ==========================================================
k-means NMI, ARI                k-means with k = classes vs the labels: normalised mutual
                                information (Strehl & Ghosh 2002), adjusted Rand index
                                (Hubert & Arabie 1985); 1 = the clusters are the classes
linear probe accuracy           logistic regression fit on Training embeddings, scored on
                                Test (Alain & Bengio 2017)
nearest-centroid accuracy       share of clips closer to their own class centroid than to
                                any other
==============================  ==========================================================
"""
from __future__ import annotations

import numpy as np

from .reports import _plt, save_figure


def centroids(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, d) mean embedding of each class (NaN for a class with no clip)."""
    return np.stack([embeddings[labels == c].mean(axis=0) if np.any(labels == c)
                     else np.full(embeddings.shape[1], np.nan) for c in range(n_classes)])


def centroid_distances(embeddings: np.ndarray, labels: np.ndarray, centres: np.ndarray):
    """(own, nearest_other, nearest): distance to the own class centroid, to the nearest other one, nearest class."""
    d = np.sqrt(((embeddings[:, None, :] - centres[None]) ** 2).sum(axis=2))
    d = np.where(np.isnan(d), np.inf, d)
    rows = np.arange(len(labels))
    own = d[rows, labels]
    others = d.copy()
    others[rows, labels] = np.inf
    return own, others.min(axis=1), d.argmin(axis=1)


def cluster_scores(embeddings: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> dict:
    """NMI and ARI of k-means (k clusters, 10 restarts) on standardised embeddings against ``labels``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.preprocessing import StandardScaler
    clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(StandardScaler().fit_transform(embeddings))
    return {"kmeans_nmi": float(normalized_mutual_info_score(labels, clusters)),
            "kmeans_ari": float(adjusted_rand_score(labels, clusters))}


def probe_scores(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> dict:
    """Accuracy and macro-F1 on ``test`` of a logistic regression fit on standardised ``train`` embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(train, train_y)
    predicted = probe.predict(test)
    return {"probe_accuracy": float(np.mean(predicted == test_y)),
            "probe_macro_f1": float(f1_score(test_y, predicted, average="macro", zero_division=0))}


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) t-SNE (van der Maaten & Hinton 2008) of standardised embeddings, PCA to 50 dims first."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler
    z = StandardScaler().fit_transform(embeddings)
    z = PCA(min(50, *z.shape), random_state=seed).fit_transform(z)
    perplexity = float(min(30.0, (len(z) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def plot_tsne(points: np.ndarray, labels: np.ndarray, is_test: np.ndarray, classes: list[str], title: str, path):
    """t-SNE scatter coloured by class: Training clips as dots, Test clips as crosses."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        for test, marker in ((False, "o"), (True, "x")):
            sel = (labels == c) & (is_test == test)
            ax.scatter(points[sel, 0], points[sel, 1], s=12 if test else 8, marker=marker,
                       color=colours(c % colours.N), alpha=0.9 if test else 0.5,
                       label=name if not test else None)
    ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}\n(dots: Training, crosses: Test)", fontsize=10)
    save_figure(fig, path)


def plot_centroid_distances(own: np.ndarray, other: np.ndarray, title: str, path):
    """Histograms of each clip's distance to its own class centroid and to the nearest other one."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.histogram_bin_edges(np.concatenate([own, other]), bins=30)
    ax.hist(own, bins=bins, alpha=0.6, label="own class centroid")
    ax.hist(other, bins=bins, alpha=0.6, label="nearest other centroid")
    ax.set_xlabel("Euclidean distance in the embedding")
    ax.set_ylabel("clips")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
